"""Byte sources: local files and http(s) URLs, with byte ranges, timeouts and retries, and the
reused buffers they are read into (``Scratch`` for streamed chunks, ``Bodies`` for whole parts).

Also the one place that decides what a playlist may make the tool read: a remote playlist
only http(s) URLs, a local one only files under its own folder (unless allowed otherwise).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import math
import os
import re
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Generator

from . import stop
from .crypto import Buffer
from .errors import FetchError, InputError, UsageError, plural
from .http import Failure, HttpClient, Into, RequestOptions, abandoner
from .playlist import MAX_PART, ByteRange
from .retry import Backoff, Retry, retry_after_seconds
from .uris import as_folder, is_url, real_path, scheme_of

log = logging.getLogger("hlsdecrypt")

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_RETRY_STATUS = {429, 500, 502, 503, 504}
#: What a server may send at most, by kind: a playlist of a day-long recording is a few MiB;
#: a key is 16 bytes (a little more is read, to say how long a wrong one is).
MAX_PLAYLIST = 32 << 20
MAX_KEY_FILE = 64
#: A whole request may take this long, however steadily a server trickles.
DEADLINE = 300.0


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


class Abandoned(Exception):
    """A fetch no one will read any more (the run ended before it)."""


class NoRoom(Exception):
    """A fetch ahead has waited ``Bodies.patience`` for a buffer with its answer open: it should
    let the answer go (a server may not wait on a reader for ever) and ask again once there is
    room (``Bodies.wait_for_room``)."""


class Bodies:
    """Buffers for whole segments fetched ahead, reused, holding about ``budget`` bytes in all.

    Each fetch has a turn, its place in the order the reader takes them; ``done(turn)`` says the
    reader has finished with a turn's body and waits for the next. The turn the reader waits for
    always gets a buffer, at once; the others wait while theirs would leave no room for it. So
    fetches ahead can never starve the one needed now, and memory stays near the budget however
    many jobs fetch. A reused buffer costs no page faults; a fresh 3 MB one costs about as much
    as decrypting it.

    A fetch ahead waits with its answer open: at the wire's speed, for moments. When the reader
    is slow (a player reading a pipe, paused), it waits ``patience`` seconds at most, then gives
    up with ``NoRoom``, and waits for room with no connection held.

    Fetches ahead are there to hide the server's latency, so a turn asks for its body only once
    it is within a window of the awaited turn (``wait_to_ask``): the awaited turn and as many
    more as it takes for their answers' latency to pass while one body is read, 1 + latency /
    transfer (the latency the least of the last eight: waits of our own for the interpreter
    only add to it), at least 2 and at most ``asking``. At the wire's speed on loopback that is
    2, where more bodies side by side would only take the cores from the decryption, and a near
    server has two requests open, not six; under 50 ms of latency it is all ``asking``.
    """

    ROUND = 64 << 10

    def __init__(self, budget: int, patience: float = 5.0, asking: int = 1 << 30,
                 clock: Callable[[], float] = time.monotonic):
        self.budget, self.patience, self._clock = budget, patience, clock
        self._most = max(2, asking)
        self._window = 2  # until a body has come: under latency, one round trip lost; at the wire's speed, none
        self._times: dict[int, list[float]] = {}  # turn -> when it asked, was answered, began reading
        self._latencies: collections.deque[float] = collections.deque(maxlen=8)  # asked -> answered, the last
        self._latency = self._transfer = 0.0  # seconds: the least of those, and reading -> read, smoothed
        self._free: list[bytearray] = []  # smallest first
        self._held: dict[int, bytearray] = {}
        self._bytes = 0  # held and free
        self._held_bytes = 0
        self._largest = 0
        self._next = 0
        self._closed = False
        self._cuts: dict[int, Callable[[], None]] = {}  # turn -> cuts the request reading into its buffer
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)  # buffers and room
        self._asking: dict[threading.Condition, int] = {}  # what a fetch outside the window waits on -> its turn

    @property
    def allocated(self) -> int:
        """Bytes in buffers, held or free: the memory this pool costs."""
        return self._bytes

    def into(self, turn: int) -> Into:
        """What ``Fetcher.read(into=...)`` takes, for the fetch of ``turn``."""
        return lambda size: self.take(size, turn)

    def wait_to_ask(self, turn: int) -> None:
        """Until ``turn`` is within the window of the awaited turn (see the class docstring)."""
        with self._cond:
            if turn >= self._next + self._window:
                waiting = threading.Condition(self._lock)
                self._asking[waiting] = turn
                try:
                    while turn >= self._next + self._window:
                        if self._closed:
                            raise Abandoned("the reader has stopped")
                        waiting.wait(0.1)  # woken by _let_ask; the timeout lets a stop through
                        stop.check()
                finally:
                    del self._asking[waiting]
            self._times.setdefault(turn, [self._clock()])

    def _let_ask(self) -> None:
        """Wake the turns the window reaches now, and only them (all, once closed): waking every
        fetch that waits at each change took the interpreter from those at work, and six jobs
        read 6% slower than one at the wire's speed."""
        reach = self._next + self._window
        for waiting, turn in self._asking.items():
            if turn < reach or self._closed:
                waiting.notify()

    def fetched(self, turn: int) -> None:
        """``turn``'s body has all come: how long it waited for its answer, and read, sizes the window.

        Requests to keep out at once: the one being read, and enough others that their latency
        passes while it is read; at least 2 (one fetching ahead), at most ``asking``."""
        now = self._clock()
        with self._cond:
            times = self._times.pop(turn, None)
            if times is None or len(times) < 3:  # read in pieces (chunked, gzip): no answer to time,
                self._window = self._most  # so as wide as before there was a window
                self._let_ask()
                return
            self._latencies.append(times[1] - times[0])
            transfer = max(now - times[2], 1e-4)
            self._transfer += (0.25 if self._transfer else 1.0) * (transfer - self._transfer)
            self._latency = min(self._latencies)
            self._window = max(2, min(self._most, 1 + round(self._latency / self._transfer)))
            self._let_ask()

    def take(self, size: int, turn: int) -> memoryview:
        """A buffer of ``size`` bytes for ``turn``; a turn's earlier buffer (a failed try) comes back."""
        answered = self._clock()
        with self._cond:
            if self._closed:  # the run ended: read no more bodies no one will take
                raise Abandoned("the reader has stopped")
            self._release(turn)
            self._largest = max(self._largest, size)
            want = self._want()
            self._wait_for_room(turn, want, time.monotonic() + self.patience)
            buffer = self._reuse(size)
            if buffer is None:
                while self._free and self._bytes + want > self.budget:
                    self._bytes -= len(self._free.pop(0))  # too small, and in the way
                buffer = bytearray(want)
                self._bytes += want
            self._held[turn] = buffer
            self._held_bytes += len(buffer)
            cut = abandoner()  # the request reading into it, which close() cuts: no one would read it
            if cut is not None:
                self._cuts[turn] = cut
            times = self._times.get(turn)
            if times is not None:
                times[1:] = [answered, self._clock()]  # a retry's answer replaces a failed try's
            return memoryview(buffer)[:size]

    def wait_for_room(self, turn: int) -> None:
        """Until a body as large as the largest yet would fit for ``turn``, or ``turn`` is awaited."""
        with self._cond:
            self._wait_for_room(turn, self._want(), None)

    def done(self, turn: int) -> None:
        """The reader has finished with ``turn`` (its buffer is free) and waits for the next."""
        with self._cond:
            self._release(turn)
            self._times.pop(turn, None)
            self._next = turn + 1
            self._cond.notify_all()
            self._let_ask()

    def close(self) -> None:
        """The reader has stopped: fetches waiting for a buffer give up (``Abandoned``), and those
        reading into one are cut, rather than run to their deadline on a slow server."""
        with self._cond:
            self._closed = True
            cuts, self._cuts = list(self._cuts.values()), {}
            self._cond.notify_all()
            self._let_ask()
        for cut in cuts:
            cut()

    def _want(self) -> int:
        return -(-self._largest // self.ROUND) * self.ROUND  # every buffer fits the largest body yet

    def _wait_for_room(self, turn: int, want: int, until: float | None) -> None:
        while turn != self._next and not self._room(want):
            left = 0.1 if until is None else min(0.1, until - time.monotonic())
            if left <= 0:
                raise NoRoom(f"no buffer free for {self.patience:g}s")
            self._cond.wait(left)  # woken by done(); the timeout lets a stop through, and the patience end
            stop.check()
            if self._closed:
                raise Abandoned("the reader has stopped")

    def _room(self, want: int) -> bool:
        """Whether a turn ahead may hold ``want`` more bytes: the one awaited must still fit."""
        awaited = 0 if self._next in self._held else want
        return self._held_bytes + want + awaited <= self.budget

    def _reuse(self, size: int) -> bytearray | None:
        for i, buffer in enumerate(self._free):
            if len(buffer) >= size:
                return self._free.pop(i)
        return None

    def _release(self, turn: int) -> None:
        self._cuts.pop(turn, None)
        buffer = self._held.pop(turn, None)
        if buffer is None:
            return
        self._held_bytes -= len(buffer)
        if self._bytes > self.budget:  # the awaited turn went over: back under it
            self._bytes -= len(buffer)
        else:
            self._free.append(buffer)
            self._free.sort(key=len)
        self._cond.notify_all()


@dataclass
class Fetcher:
    """Reads playlists, segments and key files; ``set_origin`` starts each stream (a batch shares one).

    ``timeout``: seconds one read may wait; ``deadline``: seconds one request may take in all;
    ``retries``: further tries after a transient failure (or a ``backoff`` of your own);
    ``allow_any_path``: let a local playlist refer to files outside its folder.
    ``request_options`` (headers, cookies, proxy, CA bundle: see ``http.request_options``) go with
    every http(s) request it makes. ``append_url_params`` has a remote playlist's query string
    (a signature, a token) carried over to the same-host URIs it lists without one: see
    ``playlist.resolve``.
    """

    timeout: float = 20.0
    retries: int = 3
    backoff: Backoff | None = None
    allow_any_path: bool = False
    pool_size: int = 8
    deadline: float = DEADLINE
    http: HttpClient | None = None
    request_options: RequestOptions = field(default_factory=RequestOptions)
    append_url_params: bool = False
    _root: str | None = None  # folder of the local top-level playlist, symlinks resolved
    _remote: bool = False  # the top-level playlist came over http(s)
    #: A local folder as references write it -> its real path with a separator after, or "" when
    #: outside what the playlist may make us read; filled as the stream is read (see ``_beside``).
    _folders: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for option, value, least in (("timeout", self.timeout, 0), ("deadline", self.deadline, 0),
                                     ("retries", self.retries, -1)):
            if not value > least:
                raise UsageError(f"{option} must be {'positive' if least == 0 else 'at least 0'}", option=option)
        if self.backoff is None:
            self.backoff = Backoff(attempts=self.retries + 1)
        if self.http is None:
            self.http = self.request_options.client(timeout=self.timeout, deadline=self.deadline,
                                                    pool_size=self.pool_size)

    def set_origin(self, uri: str) -> None:
        """Remember where the top-level playlist lives: it bounds what its references may read."""
        self._remote = is_url(uri)
        self._root = None if self._remote else os.path.dirname(_real(uri))
        self._folders = {}

    # -- public reads ------------------------------------------------------------------

    def read_playlist(self, uri: str) -> tuple[str, str]:
        """A playlist's text and the URI it was read from in the end (after redirects).

        A playlist that cannot be read is bad input (exit 3).
        """
        try:
            if is_url(uri):
                data, uri = self._read_http(uri, None, MAX_PLAYLIST, compressed=True, deadline=self._small_deadline)
            else:
                data = self._read_file(uri, None, MAX_PLAYLIST)
        except FetchError as exc:
            raise InputError(f"playlist {exc}") from None
        try:
            return bytes(data).decode("utf-8-sig"), uri
        except UnicodeDecodeError:
            raise InputError(f"{uri}: not an M3U8 playlist (not UTF-8 text)") from None

    def read_text(self, uri: str) -> str:
        return self.read_playlist(uri)[0]

    def read_key(self, uri: str) -> bytes:
        """A key file: 16 bytes, of which a little more is read, to say how long a wrong one is."""
        if is_url(uri):
            data, _ = self._read_http(uri, None, MAX_KEY_FILE, deadline=self._small_deadline)
        else:
            data = self._read_file(uri, None, MAX_KEY_FILE)
        return bytes(data)

    def read(self, uri: str, byterange: ByteRange | None = None, into: Into | None = None) -> Buffer:
        """The bytes of a segment ``uri``, or of its ``byterange``; read into ``into(size)`` when
        given (as ``Bodies.into`` provides) and the size is known before the bytes come."""
        if is_url(uri):
            return self._read_http(uri, byterange, MAX_PART, into=into)[0]
        return self._read_file(uri, byterange, MAX_PART, into)

    def _allowed_path(self, uri: str) -> str:
        """The real path of a local reference, if the playlist may make us read it.

        Links are resolved first: a segment that is a symlink to ~/.volc/credentials is
        outside the playlist's folder, whatever its name says.
        """
        self._check_local(uri)
        path = _real(uri)
        if not self._inside(path):
            raise InputError(f"{uri}: outside the playlist's folder (allow_any_path=True permits it)",
                             option="allow_any_path")
        return path

    def _check_local(self, uri: str) -> None:
        if scheme_of(uri):
            raise InputError(f"{uri}: only http(s) URLs and local paths can be read")
        if self._remote:
            raise InputError(f"{uri}: a remote playlist may only refer to http(s) URLs")
        if "\0" in uri:
            raise InputError(f"{uri!r}: a path with a NUL byte")

    def _inside(self, path: str) -> bool:
        """Whether ``path``, its folders resolved, is where the playlist may make us read. Its last
        part may still be a link: callers then do not follow it. "Inside" is a matter of prefix
        (``commonpath`` would cost more than the read)."""
        root = self._root
        return not root or self.allow_any_path or path == root or path.startswith(as_folder(root))

    def _beside(self, uri: str) -> str | None:
        """``uri``'s path, its folder's links resolved, when that folder is one the playlist may make
        us read; its last part may still be a link. None otherwise, or for a name that is no file's
        (``..``): the caller then resolves it all. Each folder is resolved once per stream, relative
        ones against the working folder of then: a recording's 100,000 segments share one."""
        folder, sep, name = uri.rpartition(os.sep)
        if name in ("", os.curdir, os.pardir):
            return None
        folder += sep  # "" beside us, "/" at the root
        real = self._folders.get(folder)
        if real is None:
            real = as_folder(os.path.realpath(folder or os.curdir))
            self._folders[folder] = real = real if self._inside(real) else ""
        return real + name if real else None

    def open_local(self, uri: str, byterange: ByteRange | None = None) -> LocalFile:
        """A local file (or its byte range), open and sized before any byte is read (a part's
        decryption must know where the message ends), if the playlist may make us read it (see
        ``_allowed_path``). Use it as a context manager, or read all its ``chunks``.

        The file is opened in its folder's resolved path without following a link: when it is not
        one, which is nearly always, that spares resolving it; when it is, its real path is resolved
        and checked, and that is opened, again without following a link (one swapped in meanwhile).
        """
        self._check_local(uri)
        path = self._beside(uri)
        if path:
            with contextlib.suppress(_IsALink):
                return LocalFile.open(path, uri, byterange)
        try:
            return LocalFile.open(self._allowed_path(uri), uri, byterange)
        except _IsALink:
            raise FetchError(f"{uri}: changed while it was being opened") from None

    def local_size(self, uri: str) -> int:
        """How many bytes ``open_local`` will give for the whole file, from one ``lstat``: what a
        progress display expects. A link, or a file the playlist may not make us read, is an error."""
        self._check_local(uri)
        path = self._beside(uri)
        if not path:
            raise FetchError(f"{uri}: outside the playlist's folder")
        try:
            info = os.lstat(path)
        except OSError as exc:
            raise FetchError(f"{uri}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(info.st_mode):
            raise FetchError(f"{uri}: not a regular file")
        return info.st_size

    def _read_file(self, uri: str, byterange: ByteRange | None, limit: int, into: Into | None = None) -> Buffer:
        with self.open_local(uri, byterange) as opened:
            if opened.size > limit:
                raise FetchError(f"{uri}: {opened.size} bytes, more than the {limit} a file of its kind may have")
            buffer = into(opened.size) if into else bytearray(opened.size)
            opened.read_into(memoryview(buffer))
        return buffer

    # -- http(s) -----------------------------------------------------------------------

    @property
    def _small_deadline(self) -> float:
        """Playlists and keys are small: a few read timeouts are time enough for one."""
        return min(self.deadline, 3 * self.timeout)

    def _read_http(self, url: str, byterange: ByteRange | None, limit: int, *, compressed: bool = False,
                   deadline: float | None = None, into: Into | None = None) -> tuple[Buffer, str]:
        assert self.backoff is not None  # set in __post_init__

        def give_up(exc: Exception, attempts: int) -> FetchError:
            tries = f" (gave up after {plural(attempts, 'attempt')})" if attempts > 1 else ""
            return FetchError(f"{url}: {exc}{tries}")

        return self.backoff.run(lambda: self._get_once(url, byterange, limit, compressed, deadline, into),
                                retry_on=_retry_on, give_up=give_up, what=url)

    def _get_once(self, url: str, byterange: ByteRange | None, limit: int, compressed: bool,
                  deadline: float | None, into: Into | None) -> tuple[Buffer, str]:
        headers = {}
        if byterange:
            headers["Range"] = f"bytes={byterange.offset}-{byterange.offset + byterange.length - 1}"
        assert self.http is not None
        try:
            answer = self.http.get(url, limit=limit, headers=headers, compressed=compressed, deadline=deadline,
                                   into=into)
        except Failure as exc:
            if exc.retryable:
                raise _Retryable(str(exc)) from None
            raise FetchError(f"{url}: {exc}") from None
        status = answer.status
        if status in _RETRY_STATUS:
            raise _Retryable(f"HTTP {status}", retry_after_seconds(answer.headers.get("Retry-After")))
        if status not in (200, 206):
            raise FetchError(f"{url}: HTTP {status}")
        if byterange is None:
            if status == 206:
                raise FetchError(f"{url}: partial answer (206) to a request for the whole file")
            return answer.body, answer.url
        return _slice(url, byterange, status, answer.headers.get("Content-Range"), answer.body), answer.url


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float = 0.0):
        super().__init__(reason)
        self.retry_after = retry_after


def _retry_on(exc: Exception) -> Retry | None:
    return Retry(str(exc), exc.retry_after) if isinstance(exc, _Retryable) else None


class _IsALink(Exception):
    """The file opened without following links is a symbolic link."""


class LocalFile:
    """A local file open for reading, with the size of what it gives: the whole file, or a byte range.

    Read with ``pread`` on the descriptor: no file object, no seek, no second ``fstat``; a
    recording of 100,000 short segments pays for each.
    """

    __slots__ = ("_fd", "name", "byterange", "size", "_offset")

    def __init__(self, fd: int, name: str, byterange: ByteRange | None, size: int):
        self._fd, self.name, self.byterange, self.size = fd, name, byterange, size
        self._offset = byterange.offset if byterange else 0

    @classmethod
    def open(cls, path: str, name: str, byterange: ByteRange | None) -> LocalFile:
        """Open a regular file, never blocking on a FIFO nor reading a device, nor following a link
        (``_IsALink``). ``name`` is how messages call it."""
        try:  # O_NONBLOCK: opening a FIFO does not wait for a writer (on local file systems, reads ignore it)
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno in _LINK_ERRORS:
                raise _IsALink(path) from None
            raise FetchError(f"{name}: {exc.strerror or exc}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FetchError(f"{name}: not a regular file")
            return cls(fd, name, byterange, _fits(name, byterange, info.st_size))
        except BaseException:
            os.close(fd)
            raise

    def chunks(self, scratch: Scratch, chunk: int = CHUNK) -> Generator[memoryview, None, None]:
        """The bytes in chunks, each a view of ``scratch`` valid until the next; the file is closed
        when they end, or when the iterator is closed once started (else close the file itself)."""
        try:
            done = 0
            while done < self.size:
                view = scratch.view(min(chunk, self.size - done))
                self.read_into(view, done)
                done += len(view)
                yield view
        finally:
            self.close()

    def read_into(self, buffer: memoryview, at: int = 0) -> None:
        """Fill ``buffer`` from byte ``at`` of what the file gives; a file that ends first is an error."""
        done = 0
        try:
            while done < len(buffer):
                got = os.preadv(self._fd, [buffer[done:]], self._offset + at + done)
                if not got:
                    raise FetchError(f"{self.name}: wanted {self.size} bytes{_at(self.byterange)}, "
                                     f"file has {at + done}")
                done += got
        except OSError as exc:
            raise FetchError(f"{self.name}: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> LocalFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _real(path: str) -> str:
    try:
        return real_path(path)
    except ValueError:  # an embedded NUL byte
        raise InputError(f"{path!r}: a path with a NUL byte") from None


def _slice(url: str, byterange: ByteRange, status: int, content_range: str | None, body: Buffer) -> Buffer:
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


def _fits(name: str, byterange: ByteRange | None, file_size: int) -> int:
    """How many bytes ``byterange`` (or the whole file) takes of a file of ``file_size`` bytes."""
    if byterange is None:
        return file_size
    if byterange.offset + byterange.length > file_size:
        raise FetchError(f"{name}: wanted {byterange.length} bytes{_at(byterange)}, file has {file_size}")
    return byterange.length


#: What opening a symbolic link with O_NOFOLLOW fails with: ELOOP on Linux and macOS, EMLINK on FreeBSD.
_LINK_ERRORS = (errno.ELOOP, errno.EMLINK)


def _at(byterange: ByteRange | None) -> str:
    return f" at offset {byterange.offset}" if byterange else ""
