"""The decrypt pipeline: playlist -> plan -> keys -> fetch + decrypt (parallel) -> ordered writer."""

from __future__ import annotations

import logging
from collections import deque
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

from .crypto import CbcDecryptor, decrypt_cbc
from .errors import DecryptError, FetchError, InputError
from .fetch import Buffer, Fetcher, Scratch
from .keys import KeyChain
from .media import start_problem
from .output import BackgroundWriter, open_output
from .playlist import MasterPlaylist, MediaPlaylist, Part, Variant, choose_variant, is_url, parse

log = logging.getLogger("hlsdecrypt")

MAX_MASTER_DEPTH = 3
#: Parallel fetches for http(s) segments: enough to hide a server's latency. Local files are
#: read and decrypted far faster than the output is written, so threads would only add memory.
HTTP_JOBS = 4
#: Chunks queued for the writer thread.
WRITE_AHEAD = 4
T = TypeVar("T")
R = TypeVar("R")


class ProgressSink(Protocol):
    def start(self, parts: int) -> None: ...
    def advance(self, size: int) -> None: ...
    def finish(self) -> None: ...


class _NoProgress:
    def start(self, parts: int) -> None:
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


def load_media_playlist(source: str, fetcher: Fetcher, *, variant: str = "best",
                        key_id_param: str | None = None) -> tuple[MediaPlaylist, Variant | None]:
    """Fetch and parse ``source``, following a master playlist to the chosen variant."""
    fetcher.set_origin(source)
    uri, chosen = source, None
    for _ in range(MAX_MASTER_DEPTH + 1):
        playlist = parse(fetcher.read_text(uri), uri, key_id_param=key_id_param)
        if isinstance(playlist, MediaPlaylist):
            if not playlist.segments:
                raise InputError(f"{uri}: the playlist lists no segments")
            if not playlist.ended:
                log.warning("%s: no EXT-X-ENDLIST (a live playlist): decrypting the %d segments it lists now",
                            uri, len(playlist.segments))
            return playlist, chosen
        chosen = _pick(playlist, variant)
        uri = chosen.uri
    raise InputError(f"{source}: master playlists nested more than {MAX_MASTER_DEPTH} deep")


def _pick(master: MasterPlaylist, choice: str) -> Variant:
    chosen = choose_variant(master, choice)
    index = master.variants.index(chosen)
    log.info("variant %d of %d: BANDWIDTH=%d%s, %s", index, len(master.variants), chosen.bandwidth,
                f", RESOLUTION={chosen.resolution}" if chosen.resolution else "", chosen.uri)
    return chosen


def default_jobs(playlist: MediaPlaylist) -> int:
    return HTTP_JOBS if is_url(playlist.uri) or is_url(playlist.parts[0].uri) else 1


def clear_parts(playlist: MediaPlaylist, keys: KeyChain, fetcher: Fetcher, *, jobs: int | None = None,
                media_check: bool = True) -> Iterator[tuple[Part, Iterable[Buffer]]]:
    """Each part with its clear bytes, in playlist order.

    With one job, local files stream through small reused buffers (a chunk stays valid while
    ``WRITE_AHEAD`` more are requested); otherwise whole parts are fetched and decrypted ``jobs`` at
    a time. With ``media_check``, decrypted bytes must begin like media
    (``media.start_problem``): the only way to catch a wrong IV, which leaves the padding intact.
    """
    keys.prefetch(playlist.parts)
    jobs = jobs or default_jobs(playlist)

    def check(part: Part, clear: memoryview) -> memoryview:
        problem = media_check and start_problem(clear)
        if problem:
            raise DecryptError(problem)
        return clear

    def whole(part: Part) -> Buffer:
        with _naming(part):
            data = fetcher.read(part.uri, part.byterange)
            return data if part.key is None else check(part, decrypt_cbc(data, keys.get(part.key), part.iv))

    if jobs > 1:
        for part, data in zip(playlist.parts, ordered_map(whole, playlist.parts, jobs)):
            yield part, (data,)
        return
    cipher_scratch, clear_scratch = Scratch(WRITE_AHEAD + 2), Scratch(WRITE_AHEAD + 2)

    def streamed(part: Part) -> Iterator[Buffer]:
        with _naming(part):
            if is_url(part.uri):
                yield whole(part)
                return
            chunks = fetcher.read_chunks(part.uri, part.byterange, cipher_scratch)
            if part.key is None:
                yield from chunks
                return
            decryptor = CbcDecryptor(keys.get(part.key), part.iv, fetcher.local_size(part.uri, part.byterange))
            for n, chunk in enumerate(chunks):
                clear = decryptor.update(chunk, clear_scratch.view(len(chunk)))
                yield check(part, clear) if n == 0 else clear

    for part in playlist.parts:
        yield part, streamed(part)


@contextmanager
def _naming(part: Part) -> Iterator[None]:
    """Prefix segment-level errors with the part they concern."""
    try:
        yield
    except (FetchError, DecryptError, InputError) as exc:
        raise type(exc)(f"{part.label}: {exc}") from None


def decrypt(source: str, output: str, keys: KeyChain, *, fetcher: Fetcher | None = None,
            variant: str = "best", key_id_param: str | None = None, jobs: int | None = None, media_check: bool = True,
            progress: ProgressSink | None = None) -> DecryptResult:
    """Decrypt the HLS stream at ``source`` into one clear file ``output`` (``-`` for stdout).
    """
    fetcher = fetcher or Fetcher()
    playlist, chosen = load_media_playlist(source, fetcher, variant=variant, key_id_param=key_id_param)
    written = 0
    progress = progress or _NoProgress()
    progress.start(len(playlist.parts))
    with open_output(output) as out:
        writer = BackgroundWriter(out, WRITE_AHEAD)
        try:
            for _, chunks in clear_parts(playlist, keys, fetcher, jobs=jobs, media_check=media_check):
                size = 0
                for chunk in chunks:
                    writer.write(chunk)
                    size += len(chunk)
                written += size
                progress.advance(size)
        finally:
            writer.close()
    progress.finish()
    return DecryptResult(playlist, chosen, len(playlist.segments), written)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], jobs: int) -> Iterator[R]:
    """``map(fn, items)`` on ``jobs`` threads, results in order, at most ``2 * jobs`` in flight.

    The bound keeps memory flat however long the stream is; the first error stops the rest.
    """
    if jobs <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="hlsdecrypt-fetch")
    window: deque = deque()
    try:
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * jobs:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
