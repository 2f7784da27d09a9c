"""Byte sources: local files and http(s) URLs, with byte ranges, timeouts and retries.

Also the one place that decides what a playlist may make the tool read: a remote playlist
only http(s) URLs, a local one only files under its own folder (unless allowed otherwise).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Iterator

from .crypto import Buffer
from .errors import FetchError, InputError
from .playlist import MAX_PART, ByteRange, is_url, scheme_of
from .retry import Backoff, retry_after_seconds

if TYPE_CHECKING:
    import requests

log = logging.getLogger("hlsdecrypt")

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_RETRY_STATUS = {429, 500, 502, 503, 504}


#: Local files stream through the decryptor in chunks this size: small enough that the
#: ciphertext, the clear bytes and the cipher's work stay in the CPU cache.
CHUNK = 256 * 1024


class Scratch:
    """Buffers reused in turn: a view handed out stays valid for the next ``slots - 1`` calls.

    Fresh buffers would cost a page fault per 4 KiB on first touch: about as much as the AES.
    """

    def __init__(self, slots: int = 1) -> None:
        self._buffers = [bytearray() for _ in range(slots)]
        self._next = 0

    def view(self, size: int) -> memoryview:
        i = self._next
        self._next = (i + 1) % len(self._buffers)
        if len(self._buffers[i]) < size:
            self._buffers[i] = bytearray(size)
        return memoryview(self._buffers[i])[:size]


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float = 0.0):
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass
class Fetcher:
    """Reads playlists, segments and key files; ``set_origin`` starts each stream (a batch shares one)."""

    timeout: float = 20.0
    backoff: Backoff = field(default_factory=Backoff)
    allow_any_path: bool = False
    pool_size: int = 8
    _root: str | None = None  # folder of the local top-level playlist
    _remote: bool = False  # the top-level playlist came over http(s)
    _session: requests.Session | None = None

    def set_origin(self, uri: str) -> None:
        """Remember where the top-level playlist lives: it bounds what its references may read."""
        self._remote = is_url(uri)
        self._root = None if self._remote else os.path.dirname(os.path.abspath(uri))

    # -- public reads ------------------------------------------------------------------

    def read_text(self, uri: str) -> str:
        """A playlist's text; a playlist that cannot be read is bad input (exit 3)."""
        try:
            data = self.read(uri)
        except FetchError as exc:
            raise InputError(f"playlist {exc}") from None
        try:
            return bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise InputError(f"{uri}: not an M3U8 playlist (not UTF-8 text)") from None

    def read(self, uri: str, byterange: ByteRange | None = None) -> Buffer:
        """The bytes of ``uri``, or of its ``byterange``."""
        self.check_allowed(uri)
        if is_url(uri):
            return self._read_http(uri, byterange)
        return self._read_file(uri, byterange)

    def check_allowed(self, uri: str) -> None:
        if is_url(uri):
            return
        if scheme_of(uri):
            raise InputError(f"{uri}: only http(s) URLs and local paths can be read")
        if self._remote:
            raise InputError(f"{uri}: a remote playlist may only refer to http(s) URLs")
        if self._root and not self.allow_any_path:
            path = os.path.abspath(uri)
            if os.path.commonpath([path, self._root]) != self._root:
                raise InputError(f"{uri}: outside the playlist's folder (use --allow-any-path to permit)")

    # -- local files -------------------------------------------------------------------

    def read_chunks(self, path: str, byterange: ByteRange | None, scratch: Scratch,
                    chunk: int = CHUNK) -> Iterator[memoryview]:
        """A local file (or its byte range) in chunks, each a view of ``scratch`` valid until the next."""
        self.check_allowed(path)
        try:
            with open(path, "rb", buffering=0) as f:
                size = _seek(f, byterange)
                done = 0
                while done < size:
                    view = scratch.view(min(chunk, size - done))
                    got = f.readinto(view)
                    if got != len(view):
                        raise FetchError(f"{path}: wanted {size} bytes{_at(byterange)}, file has {done + (got or 0)}")
                    done += got
                    yield view
        except OSError as exc:
            raise FetchError(f"{path}: {exc.strerror or exc}") from None

    def local_size(self, path: str, byterange: ByteRange | None) -> int:
        """How many bytes ``read_chunks`` will give, checked against the file before any is read."""
        self.check_allowed(path)
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise FetchError(f"{path}: {exc.strerror or exc}") from None
        if byterange is None:
            return size
        if byterange.offset + byterange.length > size:
            raise FetchError(f"{path}: wanted {byterange.length} bytes{_at(byterange)}, file has {size}")
        return byterange.length

    @staticmethod
    def _read_file(path: str, byterange: ByteRange | None) -> Buffer:
        try:
            with open(path, "rb", buffering=0) as f:
                size = _seek(f, byterange)
                buf = bytearray(size)
                got = f.readinto(buf)
        except OSError as exc:
            raise FetchError(f"{path}: {exc.strerror or exc}") from None
        if got != size:
            raise FetchError(f"{path}: wanted {size} bytes{_at(byterange)}, file has {got}")
        return buf

    # -- http(s) -----------------------------------------------------------------------

    def session(self) -> requests.Session:
        if self._session is None:
            import requests  # here, not at the top: local runs never pay for importing it

            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=self.pool_size)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.headers["User-Agent"] = "hlsdecrypt"
            self._session = session
        return self._session

    def _read_http(self, url: str, byterange: ByteRange | None) -> bytes:
        delays = self.backoff.delays()
        while True:
            try:
                return self._get_once(url, byterange)
            except _Retryable as exc:
                delay = next(delays, None)
                if delay is None:
                    raise FetchError(f"{url}: {exc} (gave up after {self.backoff.attempts} attempts)") from None
                log.debug("retrying %s in %.2fs: %s", url, delay, exc)
                self.backoff.wait(delay, exc.retry_after)

    def _get_once(self, url: str, byterange: ByteRange | None) -> bytes:
        import requests

        headers = {}
        if byterange:
            headers["Range"] = f"bytes={byterange.offset}-{byterange.offset + byterange.length - 1}"
        try:
            response = self.session().get(url, headers=headers, timeout=self.timeout, stream=True)
            announced = _int_or_zero(response.headers.get("Content-Length"))
            if announced > MAX_PART:  # refused before a byte of it is held in memory
                response.close()
                raise FetchError(f"{url}: {announced} bytes is larger than any segment (2 GiB at most)")
            body = response.content
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
            raise FetchError(f"{url}: not a valid URL ({type(exc).__name__})") from None
        except requests.RequestException as exc:
            raise _Retryable(_describe(exc)) from None
        status = response.status_code
        if status in _RETRY_STATUS:
            raise _Retryable(f"HTTP {status}", retry_after_seconds(response.headers.get("Retry-After")))
        if status not in (200, 206):
            raise FetchError(f"{url}: HTTP {status}")
        if byterange is None:
            if status == 206:
                raise FetchError(f"{url}: partial answer (206) to a request for the whole file")
            return body
        return _slice(url, byterange, status, response.headers.get("Content-Range"), body)


def _slice(url: str, byterange: ByteRange, status: int, content_range: str | None, body: bytes) -> bytes:
    """The requested range from a 206 whose Content-Range matches, or cut out of a whole 200 body.

    Some servers ignore Range and send the whole file with 200; writing that body as the range
    would silently corrupt the output.
    """
    start, end = byterange.offset, byterange.offset + byterange.length
    if status == 200:
        if len(body) < end:
            raise FetchError(f"{url}: the whole file has {len(body)} bytes, the range ends at {end}")
        return body[start:end]
    match = _CONTENT_RANGE.fullmatch((content_range or "").strip())
    if not match or int(match.group(1)) != start or int(match.group(2)) != end - 1:
        raise FetchError(f"{url}: asked for bytes {start}-{end - 1}, got Content-Range {content_range!r}")
    if len(body) != byterange.length:
        raise _Retryable(f"range body has {len(body)} of {byterange.length} bytes")
    return body


def _seek(f: BinaryIO, byterange: ByteRange | None) -> int:
    """Position ``f`` at the start of ``byterange`` and return how many bytes to read."""
    if byterange is None:
        return os.fstat(f.fileno()).st_size
    f.seek(byterange.offset)
    return byterange.length


def _at(byterange: ByteRange | None) -> str:
    return f" at offset {byterange.offset}" if byterange else ""


def _int_or_zero(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _describe(exc: requests.RequestException) -> str:
    import requests

    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return type(exc).__name__
