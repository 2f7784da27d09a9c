"""The decrypt pipeline: playlist -> plan -> keys -> fetch + decrypt (parallel) -> ordered writer."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, replace
from functools import partial
from urllib.parse import urlsplit
from typing import BinaryIO, Callable, ContextManager, Generator, Iterable, Iterator, Protocol, Sequence, TypeVar

from .crypto import BLOCK, SMALL as SHORT, CbcDecryptor, decrypt_short
from .defaults import HTTP_JOBS
from .errors import DecryptError, FetchError, HlsDecryptError, InputError, OutputError, UsageError
from .fetch import Bodies, Buffer, Fetcher, NoRoom, Scratch
from .keys import KeyChain, key_chain
from .media import start_problem
from .output import BackgroundWriter, Output, check_target
from .playlist import MasterPlaylist, MediaPlaylist, Part, Rendition, Variant, choose_variant, parse
from .uris import is_url, stream_name

log = logging.getLogger("hlsdecrypt")

MAX_MASTER_DEPTH = 3
#: Chunks queued for the writer thread.
WRITE_AHEAD = 4
#: Parts shorter than this are handed to the writer thread in batches of this many bytes.
BATCH = 64 * 1024
#: Bytes of whole parts fetched ahead of the decryption, at most (plus the one it waits for):
#: enough for several 3 MB segments to arrive while one is decrypted, at any number of jobs.
FETCHED_AHEAD = 16 << 20
#: Seconds a fetch ahead may hold an answer open while it waits for room (then it lets it go).
FETCH_PATIENCE = 5.0
#: A fetched part is decrypted and handed to the writer in pieces this size: its bytes are in
#: memory already, and each hand-over to the writer thread costs a wake-up (in 256 KiB pieces,
#: six jobs took 15% longer than one on loopback; in 1 MiB pieces, no longer).
FETCHED_CHUNK = 1 << 20
#: Local files sized before the run, for the progress line's total, at most: one ``lstat`` each,
#: which for a day-long recording of 100,000 segments was a tenth of its run; the rest are
#: estimated from the parts written.
SIZED_AHEAD = 10_000
#: Local parts this short (a few TS packets each) are read up to this many at a time, and
#: decrypted together: the cipher's fixed cost per call is most of what a short part costs.
RUN = 64
T = TypeVar("T")
R = TypeVar("R")


class ProgressSink(Protocol):
    """Told what the run does: ``status`` before any part (``fetching playlist…``); ``start`` with the
    parts in all, those an earlier run wrote and the sizes known in advance; ``advance`` once per part
    written, in order; ``finish`` at the end, however it came (it may be called more than once)."""

    def status(self, text: str) -> None: ...
    def start(self, parts: int, *, done: int = 0, done_bytes: int = 0, sizes: Sequence[int | None] = ()) -> None: ...
    def advance(self, size: int) -> None: ...
    def finish(self) -> None: ...


class _NoProgress:
    def status(self, text: str) -> None:
        pass

    def start(self, parts: int, *, done: int = 0, done_bytes: int = 0, sizes: Sequence[int | None] = ()) -> None:
        pass

    def advance(self, size: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass(frozen=True)
class DecryptResult:
    playlist: MediaPlaylist
    variant: Variant | None
    segments: int
    bytes_written: int
    resumed_after: int = 0  # parts an earlier run had written
    missing: tuple[str, ...] = ()  # parts skip_missing left out, each with why
    gaps: int = 0  # segments marked EXT-X-GAP: never fetched, nothing written
    output: str = ""  # where the clear stream went: a path, "-" for stdout, or a file's name
    keys: int = 0  # distinct keys the written parts needed
    label: str = ""  # for a rendition, which ("audio English"); "" for the variant itself
    renditions: tuple[DecryptResult, ...] = ()  # the variant's renditions, each in a file of its own
    remuxed: str | None = None  # with remux: the playable file made of the output and its renditions

    @property
    def written_segments(self) -> int:
        return self.segments - len(self.missing) - self.gaps


@dataclass(frozen=True)
class Stream:
    """A stream as loaded: the media playlist of the variant chosen, and the renditions it plays with."""

    playlist: MediaPlaylist
    variant: Variant | None = None
    master: MasterPlaylist | None = None
    renditions: tuple[Rendition, ...] = ()


def load_stream(source: str, fetcher: Fetcher, *, variant: str = "best", key_id_param: str | None = None) -> Stream:
    """Fetch and parse ``source``, following a master playlist to the chosen variant."""
    fetcher.set_origin(source)
    uri, chosen, master = source, None, None
    for _ in range(MAX_MASTER_DEPTH + 1):
        playlist = _read(uri, fetcher, key_id_param)
        if isinstance(playlist, MediaPlaylist):
            _check_media(playlist)
            return Stream(playlist, chosen, master, master.renditions_of(chosen) if master and chosen else ())
        master = playlist
        chosen = _pick(playlist, variant)
        uri = chosen.uri
    raise InputError(f"{source}: master playlists nested more than {MAX_MASTER_DEPTH} deep")


def load_media_playlist(source: str, fetcher: Fetcher, *, variant: str = "best",
                        key_id_param: str | None = None) -> tuple[MediaPlaylist, Variant | None]:
    """``load_stream``'s media playlist and chosen variant."""
    stream = load_stream(source, fetcher, variant=variant, key_id_param=key_id_param)
    return stream.playlist, stream.variant


def load_rendition(rendition: Rendition | Variant, fetcher: Fetcher, *,
                   key_id_param: str | None = None) -> MediaPlaylist:
    """The media playlist of a master's rendition or variant, read under the rules of the master
    that named it (``load_stream`` set them)."""
    playlist = _read(rendition.uri, fetcher, key_id_param)
    if not isinstance(playlist, MediaPlaylist):
        raise InputError(f"{rendition.uri}: named on line {rendition.line} of the master, and not a media playlist")
    _check_media(playlist)
    return playlist


def _read(uri: str, fetcher: Fetcher, key_id_param: str | None) -> MediaPlaylist | MasterPlaylist:
    """A playlist, whose references resolve against the URL its text came from in the end, after
    redirects (RFC 3986 §5.1.3), as players do."""
    text, reached = fetcher.read_playlist(uri)
    if reached != uri:
        log.debug("%s: redirected to %s; its URIs resolve against that", uri, reached)
    return parse(text, reached, key_id_param=key_id_param, append_url_params=fetcher.append_url_params)


def _check_media(playlist: MediaPlaylist) -> None:
    if not playlist.segments:
        raise InputError(f"{playlist.uri}: the playlist lists no segments")
    if not playlist.ended:
        log.warning("%s: no EXT-X-ENDLIST (a live playlist): decrypting the %d segments it lists now",
                    playlist.uri, len(playlist.segments))


def _pick(master: MasterPlaylist, choice: str) -> Variant:
    chosen = choose_variant(master, choice)
    index = master.variants.index(chosen)
    log.info("variant %d of %d: BANDWIDTH=%d%s, %s", index, len(master.variants), chosen.bandwidth,
                f", RESOLUTION={chosen.resolution}" if chosen.resolution else "", chosen.uri)
    return chosen


def default_jobs(playlist: MediaPlaylist) -> int:
    return HTTP_JOBS if is_url(playlist.uri) or is_url(playlist.parts[0].uri) else 1


def clear_parts(playlist: MediaPlaylist, keys: KeyChain, fetcher: Fetcher, *, start: int = 0,
                jobs: int | None = None, media_check: bool = True,
                gaps: list[str] | None = None) -> Iterator[tuple[Part, Iterable[Buffer]]]:
    """Each part from ``start`` on with its clear bytes, in playlist order, in chunks; a chunk
    stays valid while ``WRITE_AHEAD`` more are requested.

    With ``gaps`` given, a part that cannot be fetched is skipped (it yields no bytes) and
    recorded there; otherwise its FetchError ends the run.

    Local files, on one job, stream through small reused buffers; short ones (a few TS packets)
    are read up to ``RUN`` at a time and decrypted with one call into the cipher. Over http(s) (or with more
    jobs), whole parts are fetched ahead on ``jobs`` threads into reused buffers (``Bodies``:
    ``FETCHED_AHEAD`` bytes at most, whatever the jobs) and decrypted here, in order, a chunk at
    a time: a part is written only once all of it has come, so a retry never writes twice. With
    ``media_check``, decrypted bytes must begin like media (``media.start_problem``): the only
    way to catch a wrong IV, which leaves the padding intact.
    """
    parts = playlist.parts[start:]
    keys.prefetch(p for p in parts if not p.gap)
    jobs = jobs or default_jobs(playlist)
    cipher_scratch, clear_scratch = Scratch(WRITE_AHEAD + 2), Scratch(WRITE_AHEAD + 2)

    def check(part: Part, clear: memoryview) -> memoryview:
        problem = media_check and start_problem(clear)
        if problem:
            raise DecryptError(problem)
        return clear

    def fetch_or_skip(fetch: Callable[[], T], part: Part) -> T | None:
        try:
            return fetch()
        except FetchError as exc:
            if gaps is None:
                raise
            gaps.append(f"{part.label}: {exc}")
            log.warning("skipping %s: %s", part.label, exc)
            return None

    def decrypted(part: Part, chunks: Iterable[memoryview], size: int) -> Iterator[Buffer]:
        if part.cipher is None:
            yield from chunks
            return
        ref, iv = part.cipher
        decryptor = CbcDecryptor(keys.get(ref), iv, size)
        for n, chunk in enumerate(chunks):
            clear = decryptor.update(chunk, clear_scratch.view(len(chunk)))
            yield check(part, clear) if n == 0 else clear
        keys.confirm(ref)  # the padding at its end is checked too

    if jobs > 1 or any(is_url(p.uri) for p in parts):
        yield from _fetched_ahead(parts, fetcher, jobs, decrypted, fetch_or_skip, clear_scratch)
        return

    short = True  # whether the last part streamed was short: then the next one may be too

    def streamed(part: Part) -> Iterator[Buffer]:
        nonlocal short
        with errors_about(part):
            if part.gap:  # EXT-X-GAP: the server has nothing there, and players never ask
                return
            opened = fetch_or_skip(lambda: fetcher.open_local(part.uri, part.byterange), part)
            if opened is None:
                return
            with opened:  # closed however the part ends, read or not
                short = opened.size <= SHORT
                yield from decrypted(part, opened.chunks(cipher_scratch), opened.size)

    def short_run(start: int) -> list[tuple[Part, bytearray]]:
        """The parts from ``start`` on that are short files under its key, read whole: up to ``RUN``,
        until one is not (or cannot be read: its own turn says why, as ever)."""
        run: list[tuple[Part, bytearray]] = []
        key = parts[start].key
        for part in parts[start:start + RUN]:
            if part.key is not key or part.gap:
                break
            try:
                with fetcher.open_local(part.uri, part.byterange) as opened:
                    if not 0 < opened.size <= SHORT or opened.size % BLOCK:
                        break
                    data = bytearray(opened.size)
                    opened.read_into(memoryview(data))
            except HlsDecryptError:
                break
            run.append((part, data))
        return run

    def short_parts(run: list[tuple[Part, bytearray]]) -> Iterator[tuple[Part, Iterable[Buffer]]]:
        ref = run[0][0].key
        assert ref is not None
        with errors_about(run[0][0]):
            key = keys.get(ref)
        messages = [(data, part.iv) for part, data in run]
        for (part, _), clear in zip(run, decrypt_short(key, messages)):  # type: ignore[arg-type]  # keyed: an IV
            with errors_about(part):
                if isinstance(clear, DecryptError):
                    raise clear
                check(part, memoryview(clear))
            keys.confirm(ref)
            yield part, (clear,)

    at = 0
    while at < len(parts):
        run = short_run(at) if short and parts[at].cipher is not None else []
        if run:
            yield from short_parts(run)
            at += len(run)
        else:
            yield parts[at], streamed(parts[at])
            at += 1


def _fetched_ahead(parts: Sequence[Part], fetcher: Fetcher, jobs: int,
                   decrypted: Callable[[Part, Iterable[memoryview], int], Iterator[Buffer]],
                   fetch_or_skip: Callable[[Callable[[], Buffer], Part], Buffer | None],
                   clear_scratch: Scratch) -> Iterator[tuple[Part, Iterable[Buffer]]]:
    """``clear_parts`` for whole parts fetched ahead: ``jobs`` threads fetch (one fetches ahead of
    the decryption even with one job), and this one decrypts each body once it is complete."""
    bodies = Bodies(FETCHED_AHEAD, FETCH_PATIENCE, asking=jobs)

    def fetch(turn_part: tuple[int, Part]) -> Buffer | None:
        turn, part = turn_part
        if part.gap:  # EXT-X-GAP: the server has nothing there, and players never ask
            return None

        def read() -> Buffer:
            bodies.wait_to_ask(turn)
            while True:
                try:
                    body = fetcher.read(part.uri, part.byterange, into=bodies.into(turn))
                    bodies.fetched(turn)
                    return body
                except NoRoom:  # the reader is slow: the answer was let go, to be asked for again
                    log.debug("%s: no room to read it yet; asking again once there is", part.label)
                    bodies.wait_for_room(turn)

        with errors_about(part):
            return fetch_or_skip(read, part)

    def pieces(part: Part, body: Buffer) -> Iterator[Buffer]:
        view = memoryview(body)
        chunks = (view[at:at + FETCHED_CHUNK] for at in range(0, len(view), FETCHED_CHUNK))
        if part.cipher is None:  # copied: the body's buffer serves another fetch once this part is read
            chunks = (_copy(chunk, clear_scratch) for chunk in chunks)
        with errors_about(part):
            yield from decrypted(part, chunks, len(view))

    fetched = ordered_map(fetch, enumerate(parts), jobs, ahead=2 * jobs, release=bodies.close)
    try:
        for turn, (part, body) in enumerate(zip(parts, fetched)):
            yield part, pieces(part, body) if body is not None else ()
            bodies.done(turn)
    finally:
        fetched.close()


def _copy(chunk: memoryview, scratch: Scratch) -> memoryview:
    out = scratch.view(len(chunk))
    out[:] = chunk
    return out


class errors_about:  # a class, not @contextmanager: entered for every part, and a third of the price
    """Attach the part concerned to segment-level errors (their message then names it first)."""

    def __init__(self, part: Part):
        self.part = part

    def __enter__(self) -> None:
        pass

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, (FetchError, DecryptError, InputError)) and exc.part is None:
            exc.part = self.part


def decrypt(source: str, output: str | os.PathLike | BinaryIO, *, keys: KeyChain | None = None,
            fetcher: Fetcher | None = None, variant: str = "best", key_id_param: str | None = None,
            jobs: int | None = None, media_check: bool = True, progress: ProgressSink | None = None,
            resume: bool = False, skip_missing: bool = False, force: bool = False,
            inputs: Iterable[str] = (), renditions: str = "all", remux: str | None = None,
            keep_ts: bool = False) -> DecryptResult:
    """Decrypt the HLS stream at ``source`` (a playlist path or URL) into one clear file.

    ``output`` is a path, ``-`` for stdout, a binary file open for writing, or an existing
    folder, where the file is named after the stream (``rec1/index.m3u8`` -> ``rec1.ts``).
    ``keys`` is a ``key_chain(...)``; by default, the one ``key_chain()`` builds. ``resume``
    continues an earlier run's partial output when its plan and keys are unchanged (and keeps a
    failed run's partial output for that); ``skip_missing`` writes what can be fetched and
    reports the rest in ``DecryptResult.missing``; ``force`` replaces an existing output file;
    ``inputs`` are files the output must not be (key files, say): the playlist, its segments and
    its key files are added to them.

    From a master playlist, the chosen variant's audio and subtitle renditions are written too,
    each to its own file beside the output (``film.ts``, ``film.audio-English.ts``): ``renditions``
    is ``all``, ``none`` or one rendition's NAME (or LANGUAGE). ``remux`` (``mp4`` or ``mkv``)
    then stream-copies the decrypted files into ``output``, one playable file; the byte-exact
    ``.ts`` files stay only with ``keep_ts``.
    """
    fetcher = fetcher or Fetcher()
    inputs = [source, *inputs]
    output, folder = prepare_output(output, force=force, inputs=inputs)
    if remux and (folder or not isinstance(output, str) or output == "-"):
        raise UsageError("remux writes a file by its name: give output a file path", option="remux")
    if progress is not None:
        progress.status("fetching playlist…")
    with _finishing(progress), _chain(keys, fetcher) as chain:
        stream = load_stream(source, fetcher, variant=variant, key_id_param=key_id_param)
        chosen = _chosen_renditions(stream, renditions)
        target = os.path.join(folder, output_name(source, stream.playlist)) if folder else output

        def one(playlist: MediaPlaylist, into: str | BinaryIO, overwrite: bool, label: str = "",
                shown: ProgressSink | None = None) -> DecryptResult:
            result = decrypt_playlist(playlist, into, chain, fetcher, variant=stream.variant, jobs=jobs,
                                      media_check=media_check, progress=shown, resume=resume,
                                      skip_missing=skip_missing, force=overwrite, inputs=inputs)
            return replace(result, label=label)

        if remux:
            return _decrypt_and_remux(stream, chosen, str(target), one, remux, keep_ts, force, fetcher,
                                      key_id_param, progress)
        if chosen and (not isinstance(target, str) or target == "-" or not os.path.isfile(target) and
                       os.path.exists(target)):
            log.warning("%s: renditions are written beside an output file; not beside this one", source)
            chosen = ()
        loaded = list(_loaded(chosen, fetcher, key_id_param))
        beside = [rendition_path(str(target), r, playlist) for r, playlist in loaded]
        for path in beside:  # all of a stream's outputs are checked before any is written
            check_target(path, force=force, inputs=inputs)
        main = one(stream.playlist, target, force, shown=progress)
        done = tuple(one(playlist, path, force, r.label) for (r, playlist), path in zip(loaded, beside))
        return replace(main, renditions=done)


def _decrypt_and_remux(stream: Stream, chosen: tuple[Rendition, ...], target: str,
                       one: Callable[..., DecryptResult], fmt: str, keep_ts: bool, force: bool, fetcher: Fetcher,
                       key_id_param: str | None, progress: ProgressSink | None) -> DecryptResult:
    """The byte-exact files first, then one playable file made of them; the first go unless ``keep_ts``.

    Kept, they sit beside the output under their usual names; otherwise under hidden ones, which
    a re-run with ``resume`` can still continue.
    """
    from .remuxing import remux  # PyAV or ffmpeg: only for those who ask

    folder, name = os.path.split(os.path.abspath(target))
    base = os.path.splitext(target)[0] if keep_ts else os.path.join(folder, f".{name}")
    main = one(stream.playlist, base + _extension(stream.playlist), force or not keep_ts, shown=progress)
    done: tuple[DecryptResult, ...] = ()
    try:
        done = tuple(one(playlist, rendition_path(main.output, r, playlist), force or not keep_ts, r.label)
                     for r, playlist in _loaded(chosen, fetcher, key_id_param))
        remux([main.output, *(d.output for d in done)], target, fmt, force=force)
    except BaseException:  # what was decrypted stays: it may have taken hours, and the remux failed alone
        log.warning("the decrypted files stay: %s", ", ".join([main.output, *(d.output for d in done)]))
        raise
    if not keep_ts:
        for path in (main.output, *(d.output for d in done)):
            with suppress(FileNotFoundError):
                os.unlink(path)
    return replace(main, renditions=done, remuxed=target)


def _loaded(chosen: tuple[Rendition, ...], fetcher: Fetcher,
            key_id_param: str | None) -> Iterator[tuple[Rendition, MediaPlaylist]]:
    for rendition in chosen:
        yield rendition, load_rendition(rendition, fetcher, key_id_param=key_id_param)


def _chosen_renditions(stream: Stream, choice: str) -> tuple[Rendition, ...]:
    if choice == "all" or not stream.renditions and choice == "none":
        return stream.renditions
    if choice == "none":
        return ()
    wanted = [r for r in stream.renditions if choice.lower() in (r.name.lower(), (r.language or "").lower())]
    if not wanted:
        names = ", ".join(f"{r.name} ({r.label})" for r in stream.renditions) or "none"
        raise UsageError(f"renditions {choice!r}: the variant has no such rendition; it has: {names}",
                         option="renditions")
    return tuple(wanted)


def rendition_path(output: str, rendition: Rendition, playlist: MediaPlaylist) -> str:
    """``film.ts`` -> ``film.audio-English.ts``: beside the output, saying which rendition it holds."""
    label = re.sub(r"[^A-Za-z0-9_-]+", "_", rendition.name).strip("_") or rendition.group or "track"
    return f"{os.path.splitext(output)[0]}.{rendition.type.lower()}-{label}{_extension(playlist)}"


def prepare_output(output: str | os.PathLike | BinaryIO, *, force: bool,
                   inputs: list[str]) -> tuple[str | BinaryIO, str | None]:
    """The output as given, checked before any work, and the folder to write into when it is one
    (the file is then named after the stream, once its playlist is read)."""
    if not isinstance(output, (str, os.PathLike)):
        return output, None
    output = os.fspath(output)
    if os.path.isdir(output):
        return output, output
    if output != "-":
        check_target(output, force=force, inputs=inputs)
    return output, None


def output_name(source: str, playlist: MediaPlaylist) -> str:
    """``rec1/index.m3u8`` -> ``rec1.ts``; ``.mp4`` for fMP4 (a stream with an init section)."""
    return f"{stream_name(source)}{_extension(playlist)}"


def _extension(playlist: MediaPlaylist) -> str:
    """What the concatenated parts are: fMP4 with an init section, else what the segments are named."""
    if any(p.is_init for p in playlist.parts):
        return ".mp4"
    extension = os.path.splitext(urlsplit(playlist.segments[0].uri).path)[1].lower()
    return extension if extension in (".aac", ".ac3", ".mp3", ".vtt", ".webvtt") else ".ts"


def _chain(keys: KeyChain | None, fetcher: Fetcher) -> ContextManager[KeyChain]:
    """The caller's key chain, left open; or a default one, closed at the end."""
    return nullcontext(keys) if keys is not None else key_chain(fetcher=fetcher)


def decrypt_playlist(playlist: MediaPlaylist, output: str | BinaryIO, keys: KeyChain, fetcher: Fetcher, *,
                     variant: Variant | None = None, jobs: int | None = None, media_check: bool = True,
                     progress: ProgressSink | None = None, resume: bool = False,
                     skip_missing: bool = False, force: bool = False, inputs: Iterable[str] = ()) -> DecryptResult:
    """``decrypt`` for a playlist already loaded (by ``load_media_playlist`` with this ``fetcher``)."""
    missing: list[str] | None = [] if skip_missing else None
    sized = progress is not None
    progress = progress or _NoProgress()
    local = [playlist.uri, *(k.resolved_uri for k in playlist.keys)]
    inputs = [*inputs, *(uri for uri in local if not is_url(uri))]
    segments = (p.uri for p in playlist.parts if not is_url(p.uri))
    plan = plan_fingerprint(playlist) if resume else ""  # only a journal keeps it
    with _finishing(progress), \
            Output(output, plan, resume=resume, force=force, inputs=inputs, segments=segments) as out, \
            _output_errors(output):
        if out.resumed and not _same_keys(out, playlist, keys):
            log.warning("the keys differ from the interrupted run's: starting over")
            out.restart()
        resumed_after = out.parts_done
        if resumed_after:
            log.info("resuming after %d of %d parts (%d bytes)", resumed_after, len(playlist.parts), out.bytes_done)
        progress.start(len(playlist.parts), done=resumed_after, done_bytes=out.bytes_done,
                       sizes=expected_sizes(playlist.parts[resumed_after:], fetcher) if sized else ())
        # batches of short parts for a file; a pipe's reader (a player, say) gets each part as it comes
        writer = BackgroundWriter(out.file, WRITE_AHEAD, batch=BATCH if out.regular_file else 0)
        try:
            for part, chunks in clear_parts(playlist, keys, fetcher, start=resumed_after, jobs=jobs,
                                            media_check=media_check, gaps=missing):
                size = 0
                for chunk in chunks:
                    writer.write(chunk)
                    size += len(chunk)
                key = keys.peek(part.key) if part.key else None
                writer.call(partial(out.part_written, size, part.key.identity if part.key else None,
                                    key.fingerprint() if key else None))
                progress.advance(size)
        except BaseException:
            if out.regular_file:
                with suppress(Exception):  # the run's own error is the one to report
                    writer.close()  # what is queued reaches the file, and the journal counts it
            else:
                writer.abandon()
            raise
        writer.close()
        written = out.bytes_done
    used = {p.key.identity for p in playlist.parts if p.key and not p.gap}
    return DecryptResult(playlist, variant, len(playlist.segments), written, resumed_after, tuple(missing or ()),
                         sum(p.gap for p in playlist.segments), out.target, len(used))


@contextmanager
def _finishing(progress: ProgressSink | None) -> Iterator[None]:
    """The display ends with the run, however it ends (after the output is in place or removed)."""
    try:
        yield
    finally:
        if progress is not None:
            progress.finish()


def expected_sizes(parts: Sequence[Part], fetcher: Fetcher) -> list[int | None]:
    """What each part will weigh, where that is known before fetching: a byte range's length, a local
    file's size (the ciphertext's: the clear part is up to 16 bytes shorter) for the first
    ``SIZED_AHEAD`` files; None over http(s) and for later files (the display estimates those)."""
    sizes: list[int | None] = []
    files = 0
    for part in parts:
        if part.gap:
            sizes.append(0)
        elif part.byterange is not None:
            sizes.append(part.byterange.length)
        elif files >= SIZED_AHEAD or is_url(part.uri):
            sizes.append(None)
        else:
            files += 1
            try:
                sizes.append(fetcher.local_size(part.uri))
            except HlsDecryptError:  # the part's own fetch will say what is wrong with it
                sizes.append(None)
    return sizes


def plan_fingerprint(playlist: MediaPlaylist) -> str:
    """Changes whenever the parts, their order, byte ranges, keys or IVs do."""
    digest = hashlib.sha256()
    for p in playlist.parts:
        gap = ("gap",) if p.gap else ()  # only then, so that plans without gaps keep their fingerprints
        digest.update(repr((p.uri, p.byterange, p.key and p.key.identity, p.iv, p.sequence) + gap).encode())
    return digest.hexdigest()


def _same_keys(out: Output, playlist: MediaPlaylist, keys: KeyChain) -> bool:
    """Whether the keys the earlier run used, where still needed, are the ones we get now."""
    refs = {p.key.identity: p.key for p in playlist.parts[out.parts_done:] if p.key and p.key.identity in out.keys}
    return all(keys.get(ref).fingerprint() == out.keys[identity] for identity, ref in refs.items())


@contextmanager
def _output_errors(output: str | BinaryIO) -> Iterator[None]:
    """A write that fails (disk full, a device that refuses) is the output's problem, said in one line.

    A closed pipe on stdout is not an error of ours: it goes up as it is, for the caller to end quietly.
    """
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        where = "stdout" if output == "-" else output if isinstance(output, str) else "the output file"
        raise OutputError(f"{where}: {exc.strerror or exc}") from None


def ordered_map(fn: Callable[[T], R], items: Iterable[T], jobs: int, *, ahead: int | None = None,
                release: Callable[[], None] | None = None) -> Generator[R, None, None]:
    """``map(fn, items)`` on ``jobs`` threads, results in order, at most ``ahead`` (by default
    ``2 * jobs``) in flight; one job without ``ahead`` runs in the caller's thread.

    The bound keeps memory flat however long the stream is; the first error stops the rest.
    ``release``, called when the map ends (early or not) before it waits for its threads, frees
    any of them that wait on the caller.
    """
    if jobs <= 1 and ahead is None:
        yield from map(fn, items)
        return
    limit = ahead or 2 * jobs
    pool = ThreadPoolExecutor(max_workers=max(jobs, 1), thread_name_prefix="hlsdecrypt-fetch")
    window: deque = deque()
    try:
        for item in items:
            if len(window) >= limit:
                yield window.popleft().result()
            window.append(pool.submit(fn, item))
        while window:
            yield window.popleft().result()
    finally:
        if release is not None:
            release()
        pool.shutdown(wait=True, cancel_futures=True)
