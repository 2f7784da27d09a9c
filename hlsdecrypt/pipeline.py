"""The decrypt pipeline: playlist -> plan -> keys -> fetch + decrypt (parallel) -> ordered writer."""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

from .crypto import decrypt_cbc
from .errors import DecryptError, FetchError, InputError
from .fetch import Fetcher
from .keys import KeyChain
from .media import start_problem
from .output import open_output
from .playlist import MasterPlaylist, MediaPlaylist, Part, Variant, choose_variant, is_url, parse

log = logging.getLogger("hlsdecrypt")

MAX_MASTER_DEPTH = 3
#: Parallel fetches for http(s) segments: enough to hide a server's latency. Local files are
#: read and decrypted far faster than the output is written, so threads would only add memory.
HTTP_JOBS = 4
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
    return HTTP_JOBS if is_url(playlist.parts[0].uri) else 1


def clear_parts(playlist: MediaPlaylist, keys: KeyChain, fetcher: Fetcher, *, jobs: int | None = None,
                media_check: bool = True) -> Iterator[memoryview | bytes]:
    """The clear bytes of each part, in playlist order, fetched and decrypted ``jobs`` at a time.

    With ``media_check``, decrypted bytes must begin like media (see ``media.start_problem``):
    the only way to catch a wrong IV, which leaves the padding intact.
    """
    keys.prefetch(playlist.parts)

    def clear(part: Part) -> memoryview | bytes:
        try:
            data = fetcher.read(part.uri, part.byterange)
            if part.key is None:
                return data
            plain = decrypt_cbc(data, keys.get(part.key), part.iv)
            problem = media_check and start_problem(plain)
            if problem:
                raise DecryptError(problem)
            return plain
        except (FetchError, DecryptError, InputError) as exc:
            raise type(exc)(f"{part.label}: {exc}") from None

    return ordered_map(clear, playlist.parts, jobs or default_jobs(playlist))


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
        for data in clear_parts(playlist, keys, fetcher, jobs=jobs, media_check=media_check):
            out.write(data)
            written += len(data)
            progress.advance(len(data))
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
