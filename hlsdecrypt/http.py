"""HTTP GETs that a broken or hostile server cannot stretch.

Every answer is bounded in bytes received *and* decoded (a gzip bomb is cut at the limit, not
when memory runs out), every read by ``timeout`` and every whole request by ``deadline`` (a
server that trickles a byte a second defeats a per-read timeout). A stop (``stop``) cuts every
transfer at once. Failures are told apart, because they call for different things: a timeout or
a dropped connection is worth another try; an untrusted certificate, an unknown host or a
refused connection is not.

A caller that gives ``into`` has a plain body of announced length (no gzip, not chunked) read
straight from the socket into a buffer it provides: segments arrive at the wire's speed, with
no 3 MB ``bytes`` to assemble and free for each. Other bodies are read in pieces, as before.

``requests`` does the protocol (redirects, proxies, cookies, TLS); it is imported on first use,
so that runs on local files never pay for it. ``RequestOptions`` holds what some servers want
with every request (headers, a User-Agent, cookies, a proxy, a private CA), checked once, when
given, by ``request_options``.
"""

from __future__ import annotations

import heapq
import importlib.util
import logging
import os
import re
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping
from urllib.parse import urlsplit, urlunsplit

from . import stop
from .errors import UsageError

if TYPE_CHECKING:
    import http.client
    from http.cookiejar import CookieJar, MozillaCookieJar

    import requests

# socket, ssl and http.cookiejar (which brings urllib.request, http.client and email) are imported
# where a request, a CA bundle or --cookies needs them: a run on local files never does.

log = logging.getLogger("hlsdecrypt")

#: Bodies are read in pieces this size.
CHUNK = 256 * 1024
USER_AGENT = "hlsdecrypt"


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
    body: bytearray | memoryview  # a view of the caller's buffer when read ``into`` it


#: Gives a writable buffer of exactly the size asked for (it may wait until one is free).
Into = Callable[[int], memoryview]


class _Guard:
    """The connection of one request in flight, and the one-time reason to cut it."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._conn: Any = None
        self._lock = threading.Lock()
        self._deadline: _Deadline | None = None
        self._over = False

    def attach(self, conn: Any) -> None:
        with self._lock:
            self._conn = conn
            if self.reason:
                _shut(conn)

    def cut(self, reason: str) -> None:
        with self._lock:
            if self.reason is None and not self._over:
                self.reason = reason
                if self._conn is not None:
                    _shut(self._conn)

    def over(self) -> None:
        """The request has ended: its connection may already serve another, and a cut comes too late."""
        with self._lock:
            self._over = True
            self._conn = None

    @contextmanager
    def deadline_paused(self) -> Iterator[None]:
        """Time spent waiting on the caller (for a buffer to read into) is not the server's."""
        if self._deadline is None:
            yield
            return
        self._deadline.pause()
        try:
            yield
        finally:
            self._deadline.resume()


class _Deadline:
    """Cuts a request that has not ended ``seconds`` after it began, pauses excepted."""

    def __init__(self, seconds: float, guard: _Guard):
        self._left, self._guard = seconds, guard
        self._why = f"no complete answer within {seconds:g}s"
        self._alarm: list | None = None
        self._began = 0.0
        guard._deadline = self
        self.resume()

    def resume(self) -> None:
        if self._left <= 0:
            self._guard.cut(self._why)
            return
        self._began = time.monotonic()
        self._alarm = _alarms.set(self._began + self._left, self._guard, self._why)

    def pause(self) -> None:
        self.cancel()
        self._left -= time.monotonic() - self._began

    def cancel(self) -> None:
        if self._alarm is not None:
            _alarms.cancel(self._alarm)
            self._alarm = None


class _Alarms:
    """One thread that cuts requests at their deadlines: a thread started per request (a
    ``threading.Timer``) costs more than a small segment's transfer on loopback."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every alarm and the thread: for a forked child, which has not the thread."""
        self._heap: list[list] = []  # [when, order, guard, reason]; guard None once cancelled
        self._order = 0
        self._cancelled = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def set(self, when: float, guard: _Guard, reason: str) -> list:
        with self._cond:
            self._order += 1
            alarm = [when, self._order, guard, reason]
            heapq.heappush(self._heap, alarm)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hlsdecrypt-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0] is alarm:
                self._cond.notify()
            return alarm

    def cancel(self, alarm: list) -> None:
        with self._cond:
            if alarm[2] is None:
                return
            alarm[2] = None  # left in the heap, skipped when due, or dropped when many are
            self._cancelled += 1
            if self._cancelled > 64 and 2 * self._cancelled > len(self._heap):
                self._heap = [a for a in self._heap if a[2] is not None]
                heapq.heapify(self._heap)
                self._cancelled = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][2] is None:
                    heapq.heappop(self._heap)
                    self._cancelled -= 1
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                _, _, guard, reason = heapq.heappop(self._heap)
            guard.cut(reason)


_alarms = _Alarms()
os.register_at_fork(after_in_child=_alarms.reset)


def _shut(conn: Any) -> None:
    """Make a blocked read on ``conn`` return at once (a closed socket would not wake it)."""
    sock = getattr(conn, "sock", None)
    if sock is not None:
        import socket

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

#: Why a request is cut when no one will read its answer: not worth another try.
ABANDONED = "no one reads the answer any more"


def abandoner() -> Callable[[], None] | None:
    """A function that cuts the request this thread is making now, from any thread, once no one will
    read its answer (the run ended meanwhile); None outside a request. A cut after the request has
    ended does nothing."""
    guard = getattr(_current, "guard", None)
    return None if guard is None else lambda: guard.cut(ABANDONED)


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


def _session_class() -> type:
    """A requests Session that reads the environment's proxy and CA settings once per host, not
    once per request: requests scans every environment variable twice a request, which costs as
    much as the rest of a small request."""
    import requests

    class Session(requests.Session):
        def __init__(self) -> None:
            super().__init__()
            self._settings: dict[tuple, Any] = {}

        def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
            parts = urlsplit(url)
            key = (parts.scheme, parts.netloc, tuple(sorted((proxies or {}).items())), stream, verify, cert)
            found: Any
            try:
                found = self._settings.get(key)
            except TypeError:  # an unhashable setting: not kept
                return super().merge_environment_settings(url, proxies, stream, verify, cert)
            if found is None:
                found = super().merge_environment_settings(url, dict(proxies or {}), stream, verify, cert)
                self._settings[key] = found
            return {**found, "proxies": dict(found["proxies"] or {})}

    return Session


class HttpClient:
    """GETs with limits, over one connection pool. ``headers``, ``cookies``, ``proxy`` and
    ``ca_bundle`` apply to every request of this client.

    Without ``proxy`` and ``ca_bundle``, the environment's proxies (``HTTPS_PROXY``, ``NO_PROXY``…)
    and ``REQUESTS_CA_BUNDLE`` apply, as requests does; given, they win over the environment,
    which requests would otherwise let override a session's settings.
    """

    def __init__(self, *, timeout: float = 20.0, deadline: float = 300.0, pool_size: int = 8,
                 headers: Mapping[str, str] | None = None, user_agent: str = USER_AGENT,
                 cookies: Any = None, proxy: str | None = None, ca_bundle: str | None = None):
        self.timeout, self.deadline = timeout, deadline
        self.pool_size = pool_size
        self._headers = {"User-Agent": user_agent, **(headers or {})}
        self._cookies, self._proxy, self._ca_bundle = cookies, proxy, ca_bundle
        # given with each request: requests lets the environment override a session's proxies and CA bundle
        self._per_request: dict[str, Any] = {}
        if proxy:
            self._per_request["proxies"] = {"http": proxy, "https": proxy}
        if ca_bundle:
            self._per_request["verify"] = ca_bundle
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()

    def session(self) -> requests.Session:
        with self._session_lock:
            if self._session is None:
                session = _session_class()()
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
            deadline: float | None = None, compressed: bool = False, into: Into | None = None) -> Answer:
        """GET ``url``; the body is at most ``limit`` bytes, as received and as decoded.

        ``compressed`` asks for gzip (playlists compress well; segments and keys do not, and
        an identity body can be read without a decoder). With ``into``, a 200 or 206 answer's
        plain body of announced length is read into ``into(length)``, and the Answer's body is
        that view; the time ``into`` takes does not count against the deadline. Raises Failure,
        or stop.Stopped.
        """
        stop.check()
        guard = _Guard()
        with _in_flight_lock:
            _in_flight.add(guard)
        _current.guard = guard
        timer = _Deadline(deadline or self.deadline, guard)
        try:
            return self._get(url, limit, headers, compressed, guard, into)
        finally:
            timer.cancel()
            guard.over()
            _current.guard = None
            with _in_flight_lock:
                _in_flight.discard(guard)

    def _get(self, url: str, limit: int, headers: Mapping[str, str] | None, compressed: bool,
             guard: _Guard, into: Into | None) -> Answer:
        import requests
        import urllib3

        wanted = {"Accept-Encoding": "gzip" if compressed else "identity", **(headers or {})}
        try:
            response = self.session().get(url, headers=wanted, timeout=self.timeout, stream=True,
                                          **self._per_request)
            try:
                announced = _int_or_none(response.headers.get("Content-Length"))
                if announced is not None and announced > limit and response.status_code < 300:
                    raise Failure(f"{announced} bytes announced, more than the {_size(limit)} allowed",
                                  retryable=False)
                plain = _plain_body(response, limit) if into and response.status_code in (200, 206) else None
                body: bytearray | memoryview
                if plain is not None and into is not None:
                    body = _read_into(response, plain, into, guard)
                else:
                    body = _read_body(response, limit, guard)
            finally:
                response.close()
        except Failure:
            raise
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            if guard.reason == "stopped":
                raise stop.Stopped() from None
            if guard.reason:
                raise Failure(guard.reason, retryable=guard.reason != ABANDONED) from None
            if isinstance(exc, requests.exceptions.InvalidSchema) and _scheme(url) in ("http", "https"):
                # only a redirect leads an http(s) request elsewhere: to file:, data:, ftp:…
                raise Failure("redirected to a URL that is not http(s): refused", retryable=False) from None
            raise _failure(exc, self.timeout) from None
        if guard.reason == "stopped":
            raise stop.Stopped()
        return Answer(response.status_code, response.url, response.headers, body)


def _plain_body(response: requests.Response, limit: int) -> http.client.HTTPResponse | None:
    """The http.client response under urllib3's, when its body can be read into a buffer as it is:
    not encoded, not chunked, of announced length, and not yet begun. None otherwise (the body is
    then read in pieces). Reading below urllib3 skips its copy into a fresh ``bytes`` per read."""
    import http.client  # loaded with requests already; not at start-up, for runs on local files

    raw = response.raw
    fp = getattr(raw, "_fp", None)
    encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
    if (not isinstance(fp, http.client.HTTPResponse) or encoding != "identity" or fp.chunked
            or fp.length is None or fp.length > limit or raw.tell() or fp.isclosed()):
        return None
    return fp


def _read_into(response: requests.Response, fp: http.client.HTTPResponse, into: Into, guard: _Guard) -> memoryview:
    """The body, read from the socket into ``into(length)``: exactly the announced length.

    A connection that ends early is a dropped one (worth another try). Bytes a server sends
    beyond its Content-Length are not read: urllib3 finds them waiting on the connection and
    does not reuse it.
    """
    length = fp.length or 0
    with guard.deadline_paused():
        view = into(length)
    got = 0
    while got < length and not guard.reason:
        n = fp.readinto(view[got:])
        if not n:
            break
        got += n
    if guard.reason:
        raise OSError(guard.reason)  # the caller names the reason
    if got < length:
        raise Failure(f"connection dropped mid-answer ({got} of {length} bytes)", retryable=True)
    response.raw.release_conn()  # read to its end: the connection serves the next request
    return view


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
    import socket

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


def _scheme(url: str) -> str:
    return url.partition(":")[0].lower() if ":" in url else ""


# -- what some servers want with every request ---------------------------------------------

@dataclass(frozen=True)
class RequestOptions:
    """Headers, User-Agent, cookies, proxy and CA bundle for the requests of playlists, segments
    and keys (never for the key API's signed requests, which have their own client).

    Header values, cookies and a proxy's password may be credentials: ``repr`` names the headers,
    counts the cookies and hides the proxy's user part.
    """

    headers: tuple[tuple[str, str], ...] = ()
    user_agent: str = USER_AGENT
    cookies: CookieJar | None = None
    proxy: str | None = None
    ca_bundle: str | None = None

    def client(self, **limits: Any) -> HttpClient:
        """An HttpClient that sends these options with every request; ``limits`` as HttpClient takes them."""
        return HttpClient(headers=dict(self.headers), user_agent=self.user_agent, cookies=self.cookies,
                          proxy=self.proxy, ca_bundle=self.ca_bundle, **limits)

    def __repr__(self) -> str:
        cookies = None if self.cookies is None else f"<{len(self.cookies)} cookies>"
        return (f"RequestOptions(headers={[name for name, _ in self.headers]!r}, user_agent={self.user_agent!r}, "
                f"cookies={cookies}, proxy={_shown_proxy(self.proxy)!r}, ca_bundle={self.ca_bundle!r})")


#: The headers hlsdecrypt sets itself, per request: a fixed one would break byte ranges or bodies.
_OWN_HEADERS = {"range": "Range", "accept-encoding": "Accept-Encoding"}
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header name (RFC 9110 §5.6.2)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # line breaks would end the header early
PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")


def request_options(*, headers: Iterable[str] = (), user_agent: str | None = None, cookies: str | None = None,
                    proxy: str | None = None, ca_bundle: str | None = None) -> RequestOptions:
    """RequestOptions from the command line's text, checked now: a mistake is a UsageError naming
    the option, before any request. Secrets in the text are never repeated in messages or logs."""
    parsed = _headers(headers)
    names = {name.lower() for name, _ in parsed}
    if user_agent is not None:
        if "user-agent" in names:
            raise UsageError("give the User-Agent with --user-agent or --header, not both")
        _check_value(user_agent, "--user-agent")
    if cookies is not None and "cookie" in names:
        raise UsageError("give cookies with --cookies FILE or a Cookie --header, not both")
    options = RequestOptions(
        headers=parsed,
        user_agent=user_agent if user_agent is not None else USER_AGENT,
        cookies=load_cookies(cookies) if cookies is not None else None,
        proxy=_proxy_url(proxy) if proxy else None,
        ca_bundle=_ca_bundle(ca_bundle) if ca_bundle else None,
    )
    if parsed:
        log.debug("every request for playlists, segments and keys carries the headers %s (values not shown)",
                  ", ".join(name for name, _ in parsed))
    if options.proxy:
        log.debug("requests for playlists, segments and keys go through the proxy %s", _shown_proxy(options.proxy))
    if options.ca_bundle:
        log.debug("trusting the CA certificates of %s, and no others", options.ca_bundle)
    return options


def _headers(texts: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """``'Name: value'`` texts as (name, value) pairs. A text that is not one is named by its
    position: it may hold a token, and an error message is no place for it."""
    found: dict[str, tuple[str, str]] = {}
    for n, text in enumerate(texts, 1):
        name, colon, value = text.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not _TOKEN.fullmatch(name):
            what = "no colon" if not colon else "no header name before the colon"
            raise UsageError(f"--header #{n}: want 'Name: value', found {what} (the text is not shown: "
                             "it may hold a secret)")
        if name.lower() in _OWN_HEADERS:
            raise UsageError(f"--header {name}: hlsdecrypt sets {_OWN_HEADERS[name.lower()]} itself, per request")
        if name.lower() in found:
            raise UsageError(f"--header {name}: given twice")
        _check_value(value, f"--header {name}")
        found[name.lower()] = (name, value)
    return tuple(found.values())


def _check_value(value: str, option: str) -> None:
    if _CONTROL.search(value):
        raise UsageError(f"{option}: the value holds a line break or another control character")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise UsageError(f"{option}: the value is not Latin-1 text, which HTTP headers carry "
                         "(percent-encode it, as the server expects)") from None


def load_cookies(path: str) -> MozillaCookieJar:
    """The cookies of a Netscape cookies.txt, as browser extensions export it and curl and yt-dlp read it.

    Read here rather than by ``MozillaCookieJar.load``, which refuses files whose include-subdomains
    field disagrees with the domain's leading dot (some exporters write them), drops the session
    cookies that exporters write with expiry 0, and repeats the offending line — a cookie's value —
    in its error. ``#HttpOnly_`` lines (curl, browsers) are cookies; other ``#`` lines are comments.
    """
    from http.cookiejar import Cookie, MozillaCookieJar

    option = f"--cookies {path}"
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise UsageError(f"{option}: {exc.strerror or exc}") from None
    netscape = bool(lines) and re.match(r"#( Netscape)? HTTP Cookie File", lines[0]) is not None
    jar = MozillaCookieJar(path)
    for n, line in enumerate(lines, 1):
        http_only = line.startswith("#HttpOnly_")
        if http_only:
            line = line[len("#HttpOnly_"):]
        if not line.strip() or line.lstrip().startswith(("#", "$")):
            continue
        fields = line.split("\t")
        if len(fields) != 7:
            if not netscape:
                raise UsageError(f"{option}: not a Netscape cookies.txt file (it begins with "
                                 "'# Netscape HTTP Cookie File' and has one tab-separated cookie a line)")
            raise UsageError(f"{option}: line {n}: want 7 tab-separated fields (domain, include subdomains, "
                             f"path, https only, expires, name, value), found {len(fields)}")
        domain, _, cookie_path, secure, expires, name, text = fields
        value: str | None = text
        if not domain or not (expires.isdigit() or expires == ""):
            raise UsageError(f"{option}: line {n}: " + ("no domain" if not domain else
                                                        "the expiry is not a number of seconds since 1970"))
        lasts = expires not in ("", "0")  # 0: a session cookie, as exporters write them
        if not name:  # cookies.txt writes 'Set-Cookie: foo' with no name, as the jar loads it
            name, value = text, None
        jar.set_cookie(Cookie(0, name, value, None, False, domain, domain.startswith("."), domain.startswith("."),
                              cookie_path, False, secure == "TRUE", int(expires) if lasts else None, not lasts,
                              None, None, {"HttpOnly": ""} if http_only else {}))
    if not len(jar):
        raise UsageError(f"{option}: no cookies in it")
    total = len(jar)
    jar.clear_expired_cookies()  # never sent: said now, rather than left for a server to refuse in silence
    if len(jar) < total:
        log.warning("%s: %d of %d cookies have expired and will not be sent", option, total - len(jar), total)
    log.debug("%s: %d cookies for %d domains (values not shown)", option, len(jar), len({c.domain for c in jar}))
    return jar


def _proxy_url(text: str) -> str:
    """A proxy URL; without a scheme, an http proxy (as curl and requests read one)."""
    url = text.strip() if "://" in text else "http://" + text.strip()
    shown = _shown_proxy(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise UsageError(f"--proxy {shown}: not a URL") from None
    if parts.scheme.lower() not in PROXY_SCHEMES or not parts.hostname:
        raise UsageError(f"--proxy {shown}: want a URL such as http://HOST:PORT (or https://, socks5h://)")
    if parts.scheme.lower().startswith("socks") and importlib.util.find_spec("socks") is None:
        raise UsageError(f"--proxy {shown}: a SOCKS proxy needs PySocks (pip install 'requests[socks]')")
    return url


def _shown_proxy(url: str | None) -> str | None:
    """A proxy URL without its user and password."""
    if not url or "@" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a proxy URL with credentials)"
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def _ca_bundle(path: str) -> str:
    """A PEM file of CA certificates (or a folder of them, hashed as OpenSSL wants), checked now."""
    import ssl

    option = f"--ca-bundle {path}"
    if not os.path.exists(path):
        raise UsageError(f"{option}: no such file")
    try:
        if os.path.isdir(path):
            ssl.create_default_context(capath=path)
        else:
            ssl.create_default_context(cafile=path)
    except ssl.SSLError:
        raise UsageError(f"{option}: no PEM certificate in it") from None
    except OSError as exc:
        raise UsageError(f"{option}: {exc.strerror or exc}") from None
    return path
