"""Real HTTP servers on 127.0.0.1 (port 0) for the tests: static files with Range, and faults."""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections import Counter
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1, port 0, for the lifetime of a ``with`` block.

    Subclasses give ``_handler()``, a request handler class; a ``quiet`` server does not print
    the tracebacks of clients that hang up mid-answer (fault tests cause them on purpose).
    """

    def __init__(self, *, quiet: bool = False):
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        if quiet:
            self._httpd.handle_error = lambda request, address: None
        self._httpd.daemon_threads = True

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return host, port

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def __enter__(self):
        # a short poll: shutdown() waits for it, and every test pays that wait
        threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass


class Request(NamedTuple):
    """A request as a server saw it."""

    path: str  # unquoted, without the query
    query: str
    headers: Message


class StaticServer(LoopbackServer):
    """Serves a folder. ``ignore_range`` answers 200 with the whole file, as some CDNs do.

    ``faults`` maps a path to the faults to inject, one per request, before serving it
    normally: an HTTP status (429 comes with ``Retry-After: 1``), ``"drop"`` (close the
    connection without an answer), ``"truncate"`` (announce the whole length, send half, close)
    or ``"slow"`` (answer after ``slow_seconds``).

    ``redirects`` maps a path to where it has moved: a Location (answered with 302), or
    (status, Location). ``gate``, given each Request, returns an HTTP status to refuse it with
    (a server that wants a header, a cookie or a signed query), or None to serve it.
    ``requests`` records every request, in order of arrival."""

    def __init__(self, root: Path, *, ignore_range: bool = False, quiet: bool = False):
        self.root = root
        self.ignore_range = ignore_range
        self.delay = 0.0  # seconds added to every answer, like a distant server
        self.slow_seconds = 3.0
        self.hits: Counter[str] = Counter()
        self.faults: dict[str, list[int | str]] = {}
        self.redirects: dict[str, str | tuple[int, str]] = {}
        self.gate: Callable[[Request], int | None] | None = None
        self.requests: list[Request] = []
        super().__init__(quiet=quiet)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                path = unquote(urlsplit(self.path).path)
                server.hits[path] += 1
                request = Request(path, urlsplit(self.path).query, self.headers)
                server.requests.append(request)
                if server.delay:
                    time.sleep(server.delay)
                refusal = server.gate(request) if server.gate else None
                if refusal:
                    return self._send(refusal, b"refused")
                moved = server.redirects.get(path)
                if moved:
                    status, location = moved if isinstance(moved, tuple) else (302, moved)
                    return self._send(status, b"moved", {"Location": location})
                pending = server.faults.get(path)
                fault = pending.pop(0) if pending else None
                if isinstance(fault, int):
                    return self._send(fault, b"fault", {"Retry-After": "1"} if fault == 429 else None)
                if fault == "drop":
                    self.close_connection = True
                    return
                file = (server.root / path.lstrip("/")).resolve()
                if not file.is_file() or server.root.resolve() not in file.parents:
                    return self._send(404, b"not found")
                body = file.read_bytes()
                if fault == "truncate":
                    self.close_connection = True
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[:len(body) // 2])
                    return
                if fault == "slow":
                    time.sleep(server.slow_seconds)
                match = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
                if match and not server.ignore_range:
                    start, end = int(match.group(1)), min(int(match.group(2)), len(body) - 1)
                    headers = {"Content-Range": f"bytes {start}-{end}/{len(body)}"}
                    return self._send(206, body[start:end + 1], headers)
                self._send(200, body)

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


class ForwardProxy(LoopbackServer):
    """A plain-http forward proxy: takes absolute-form requests (``GET http://host:port/path``),
    records their URLs in ``urls`` and forwards them, answering with what the server answered."""

    _HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
                             "transfer-encoding", "upgrade", "content-length"})

    def __init__(self) -> None:
        self.urls: list[str] = []
        super().__init__(quiet=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                target = urlsplit(self.path)
                if target.scheme != "http" or not target.hostname:
                    return self._send(400, [], b"a proxy wants absolute-form http URLs")
                proxy.urls.append(self.path)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in proxy._HOP_BY_HOP}
                upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10)
                try:
                    upstream.request("GET", urlunsplit(("", "", target.path or "/", target.query, "")),
                                     headers=headers)
                    answer = upstream.getresponse()
                    body = answer.read()
                except OSError:
                    return self._send(502, [], b"upstream failed")
                finally:
                    upstream.close()
                kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in proxy._HOP_BY_HOP]
                self._send(answer.status, kept, body)

            def _send(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


class SlowConnectProxy:
    """A TCP proxy on 127.0.0.1 that holds each new connection ``delay`` seconds before passing
    it on to ``upstream`` (host, port): a distant server's TCP and TLS set-up, on loopback."""

    def __init__(self, upstream: tuple[str, int], delay: float):
        self.upstream, self.delay = upstream, delay
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        time.sleep(self.delay)
        try:
            server = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        for a, b in ((client, server), (server, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class HostileServer(LoopbackServer):
    """Answers that a well-behaved client must survive, by path (each bounded, so it stops by itself):

    ``/endless/*``: 200 with no Content-Length, then data until the client leaves (64 MiB at most);
    ``/chunked/*``: the same, chunked; ``/bomb/*``: a small gzip body that inflates to 64 MiB;
    ``/trickle-headers/*`` and ``/trickle-body/*``: four bytes a second (the body has ``?bytes=N``, 100
    by default); ``/silent/*``: reads the
    request and never answers (30 s at most). Other paths are served from ``root``."""

    LIMIT = 64 << 20

    def __init__(self, root: Path):
        self.root = root
        self.requests: Counter[str] = Counter()
        super().__init__(quiet=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        import gzip

        bomb = gzip.compress(bytes(server.LIMIT), compresslevel=9)

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                path = unquote(urlsplit(self.path).path)
                mode = path.split("/")[1]
                server.requests[mode] += 1
                if mode == "silent":
                    time.sleep(30)
                    return
                if mode == "trickle-headers":
                    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n" + bytes(16):
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.25)
                    return
                if mode == "trickle-body":
                    length = int(parse_qs(urlsplit(self.path).query).get("bytes", ["100"])[0])
                    self.send_response(200)
                    self.send_header("Content-Length", str(length))
                    self.end_headers()
                    for _ in range(length):
                        self.wfile.write(b"\0")
                        self.wfile.flush()
                        time.sleep(0.25)
                    return
                if mode == "bomb":
                    self.send_response(200)
                    self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(bomb)))
                    self.end_headers()
                    self.wfile.write(bomb)
                    return
                if mode in ("endless", "chunked"):
                    self.close_connection = True
                    self.send_response(200)
                    if mode == "chunked":
                        self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    piece = bytes(1 << 16)
                    for _ in range(server.LIMIT // len(piece)):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if mode == "chunked" else piece)
                    return
                file = server.root / path.lstrip("/")
                body = file.read_bytes() if file.is_file() else b""
                self.send_response(200 if body else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
