"""HTTP GETs that a broken or hostile server cannot stretch.

Every answer is bounded in bytes received *and* decoded (a gzip bomb is cut at the limit, not
when memory runs out), every read by ``timeout`` and every whole request by ``deadline`` (a
server that trickles a byte a second defeats a per-read timeout). A stop (``stop``) cuts every
transfer at once. Failures are told apart, because they call for different things: a timeout or
a dropped connection is worth another try; an untrusted certificate, an unknown host or a
refused connection is not.

``requests`` does the protocol (redirects, proxies, cookies, TLS); it is imported on first use,
so that runs on local files never pay for it.
"""

from __future__ import annotations

import socket
import threading
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from . import stop

if TYPE_CHECKING:
    import requests

#: Bodies are read in pieces this size.
CHUNK = 256 * 1024


class Failure(Exception):
    """A request that got no usable answer; ``retryable`` says whether another try may help."""

    def __init__(self, reason: str, *, retryable: bool):
        super().__init__(reason)
        self.retryable = retryable


@dataclass(frozen=True)
class Answer:
    status: int
    url: str  # the URL finally reached, after redirects: relative references resolve against it
    headers: Mapping[str, str]
    body: bytearray


class _Guard:
    """The connection of one request in flight, and the one-time reason to cut it."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._conn: Any = None
        self._lock = threading.Lock()

    def attach(self, conn: Any) -> None:
        with self._lock:
            self._conn = conn
            if self.reason:
                _shut(conn)

    def cut(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
                if self._conn is not None:
                    _shut(self._conn)


def _shut(conn: Any) -> None:
    """Make a blocked read on ``conn`` return at once (a closed socket would not wake it)."""
    sock = getattr(conn, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


_current = threading.local()  # the guard of the request this thread is making
_in_flight: set[_Guard] = set()
_in_flight_lock = threading.Lock()


def _cut_all() -> None:
    with _in_flight_lock:
        guards = list(_in_flight)
    for guard in guards:
        guard.cut("stopped")


stop.on_stop(_cut_all)


def _guarded_adapter_class() -> type:
    """An HTTPAdapter whose connections report to the calling thread's guard (built lazily)."""
    import requests
    from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
    from urllib3.connection import HTTPConnection, HTTPSConnection

    def guarded(conn_cls: type) -> type:
        class Conn(conn_cls):  # type: ignore[valid-type, misc]
            def connect(self) -> None:
                super().connect()
                guard = getattr(_current, "guard", None)
                if guard is not None:
                    guard.attach(self)  # a cut that came during connect takes effect now

        return Conn

    def pool(pool_cls: type, conn_cls: type) -> type:
        class Pool(pool_cls):  # type: ignore[valid-type, misc]
            ConnectionCls = guarded(conn_cls)

            def _get_conn(self, timeout: float | None = None) -> Any:
                conn = super()._get_conn(timeout)
                guard = getattr(_current, "guard", None)
                if guard is not None:
                    guard.attach(conn)
                return conn

        return Pool

    pools = {"http": pool(HTTPConnectionPool, HTTPConnection), "https": pool(HTTPSConnectionPool, HTTPSConnection)}

    class Adapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, proxy: str, **kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **kwargs)
            if not proxy.lower().startswith("socks"):
                manager.pool_classes_by_scheme = pools
            return manager

    return Adapter


class HttpClient:
    """GETs with limits, over one connection pool. ``headers``, ``cookies``, ``proxy`` and
    ``ca_bundle`` apply to every request of this client."""

    def __init__(self, *, timeout: float = 20.0, deadline: float = 300.0, pool_size: int = 8,
                 headers: Mapping[str, str] | None = None, user_agent: str = "hlsdecrypt",
                 cookies: Any = None, proxy: str | None = None, ca_bundle: str | None = None):
        self.timeout, self.deadline = timeout, deadline
        self.pool_size = pool_size
        self._headers = {"User-Agent": user_agent, **(headers or {})}
        self._cookies, self._proxy, self._ca_bundle = cookies, proxy, ca_bundle
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()

    def session(self) -> requests.Session:
        with self._session_lock:
            if self._session is None:
                import requests

                session = requests.Session()
                adapter = _guarded_adapter_class()(pool_connections=4, pool_maxsize=self.pool_size)
                session.mount("http://", adapter)
                session.mount("https://", adapter)
                session.headers.update(self._headers)
                if self._cookies is not None:
                    session.cookies = self._cookies
                if self._proxy:
                    session.proxies = {"http": self._proxy, "https": self._proxy}
                if self._ca_bundle:
                    session.verify = self._ca_bundle
                self._session = session
            return self._session

    def get(self, url: str, *, limit: int, headers: Mapping[str, str] | None = None,
            deadline: float | None = None, compressed: bool = False) -> Answer:
        """GET ``url``; the body is at most ``limit`` bytes, as received and as decoded.

        ``compressed`` asks for gzip (playlists compress well; segments and keys do not, and
        an identity body can be read without a decoder). Raises Failure, or stop.Stopped.
        """
        stop.check()
        guard = _Guard()
        timer = threading.Timer(deadline or self.deadline, guard.cut,
                                (f"no complete answer within {deadline or self.deadline:g}s",))
        timer.daemon = True
        with _in_flight_lock:
            _in_flight.add(guard)
        _current.guard = guard
        timer.start()
        try:
            return self._get(url, limit, headers, compressed, guard)
        finally:
            timer.cancel()
            _current.guard = None
            with _in_flight_lock:
                _in_flight.discard(guard)

    def _get(self, url: str, limit: int, headers: Mapping[str, str] | None, compressed: bool,
             guard: _Guard) -> Answer:
        import requests
        import urllib3

        wanted = {"Accept-Encoding": "gzip" if compressed else "identity", **(headers or {})}
        try:
            response = self.session().get(url, headers=wanted, timeout=self.timeout, stream=True)
            try:
                announced = _int_or_none(response.headers.get("Content-Length"))
                if announced is not None and announced > limit and response.status_code < 300:
                    raise Failure(f"{announced} bytes announced, more than the {_size(limit)} allowed",
                                  retryable=False)
                body = _read_body(response, limit, guard)
            finally:
                response.close()
        except Failure:
            raise
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            if guard.reason == "stopped":
                raise stop.Stopped() from None
            if guard.reason:
                raise Failure(guard.reason, retryable=True) from None
            raise _failure(exc, self.timeout) from None
        if guard.reason == "stopped":
            raise stop.Stopped()
        return Answer(response.status_code, response.url, response.headers, body)


def _read_body(response: requests.Response, limit: int, guard: _Guard) -> bytearray:
    """The body, decoded from gzip/deflate by us: urllib3 would inflate a bomb without a bound."""
    encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        decoder: Any = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, by their headers
    elif encoding == "identity":
        decoder = None
    else:
        raise Failure(f"Content-Encoding {encoding} is not supported", retryable=False)
    raw = response.raw
    body = bytearray()
    received = 0
    while chunk := raw.read(CHUNK, decode_content=False):
        if guard.reason:
            break  # the loop's read raised, or will: the caller names the reason
        received += len(chunk)
        if received > limit:
            raise Failure(f"more than the {_size(limit)} allowed", retryable=False)
        if decoder is None:
            body += chunk
            continue
        data = chunk
        while data:
            try:
                body += decoder.decompress(data, limit + 1 - len(body))
            except zlib.error:
                raise Failure(f"the {encoding} body does not decode", retryable=True) from None
            if len(body) > limit:
                raise Failure(f"more than the {_size(limit)} allowed, once decoded", retryable=False)
            data = decoder.unconsumed_tail
    if guard.reason:
        raise OSError(guard.reason)
    return body


def _failure(exc: BaseException, timeout: float) -> Failure:
    """What went wrong, in words a user can act on, and whether to try again."""
    import requests

    causes: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(causes) < 10:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = " ".join(str(c) for c in causes)
    if isinstance(exc, requests.exceptions.SSLError):
        why = "certificate not trusted" if "CERTIFICATE_VERIFY_FAILED" in text else "TLS handshake failed"
        return Failure(f"{why} (use --ca-bundle for a private CA)" if "not trusted" in why else why,
                       retryable=False)
    if isinstance(exc, (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                        requests.exceptions.MissingSchema, ValueError)):
        return Failure(f"not a valid URL ({type(exc).__name__})", retryable=False)
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return Failure("too many redirects", retryable=False)
    if isinstance(exc, requests.Timeout) or any(isinstance(c, socket.timeout) for c in causes):
        return Failure(f"timed out (no data for {timeout:g}s)", retryable=True)
    if any(isinstance(c, socket.gaierror) for c in causes) or "NameResolutionError" in repr(causes):
        return Failure("cannot resolve the host name", retryable=False)
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return Failure("connection refused", retryable=False)
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or "IncompleteRead" in text:
        return Failure("connection dropped mid-answer", retryable=True)
    return Failure("connection dropped", retryable=True)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _size(n: int) -> str:
    return f"{n // (1 << 20)} MiB" if n >= 1 << 20 else f"{n} bytes"
