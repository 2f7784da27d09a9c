"""nginx on a loopback port, serving a folder, for the HTTP benchmark: a real web server's speed.

    with Nginx(folder) as web:          # web.url/NAME/... is folder/NAME/...
        ...                             # web.url/slow/NAME/... answers 50 ms later (``latency``)

The config is written to a temporary folder (nothing of the system's nginx is used or touched):
one worker per core, ``sendfile``, keep-alive, no access log. The added latency needs the echo
module (Debian's ``libnginx-mod-http-echo``, which ``nginx-light`` brings): without it,
``latency_url`` is None.

    python3 benchmarks/nginx_server.py FOLDER   # serve FOLDER until Ctrl-C or SIGTERM, printing the URLs
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")


def available() -> bool:
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()


def _binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def version() -> str:
    out = subprocess.run([_binary(), "-v"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


class Nginx:
    """nginx serving ``root`` on 127.0.0.1 for the lifetime of a ``with`` block."""

    def __init__(self, root: Path, *, latency: float = 0.05):
        self.root = Path(root).resolve()
        self.latency = latency
        self.port = 0
        self._dir: tempfile.TemporaryDirectory | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def latency_url(self) -> str | None:
        """Where every answer comes ``latency`` seconds late, or None without the echo module."""
        return f"{self.url}/slow" if ECHO_MODULE.exists() else None

    def __enter__(self) -> Nginx:
        self._dir = tempfile.TemporaryDirectory(prefix="bench-nginx-")
        work = Path(self._dir.name)
        served = work / "www"
        served.mkdir()
        for entry in self.root.iterdir():
            (served / entry.name).symlink_to(entry)
        (served / "slow").symlink_to(served)  # /slow/X is /X, answered late
        self.port = _free_port()
        load = f"load_module {ECHO_MODULE};" if ECHO_MODULE.exists() else ""
        slow = (f"location /slow/ {{ echo_sleep {self.latency}; echo_exec @file; }}\n"
                "        location @file { }") if ECHO_MODULE.exists() else ""
        (work / "nginx.conf").write_text(f"""
{load}
worker_processes auto;
daemon off;
master_process on;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
user {_user()};
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    keepalive_timeout 60s;
    types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
    default_type application/octet-stream;
    client_body_temp_path {work}/tmp; proxy_temp_path {work}/tmp; fastcgi_temp_path {work}/tmp;
    uwsgi_temp_path {work}/tmp; scgi_temp_path {work}/tmp;
    server {{
        listen 127.0.0.1:{self.port};
        root {served};
        {slow}
    }}
}}
""")
        self._proc = subprocess.Popen([_binary(), "-c", str(work / "nginx.conf"), "-p", str(work),
                                       "-e", str(work / "error.log")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                    log = (work / "error.log").read_text() if (work / "error.log").exists() else ""
                    self.__exit__()
                    raise RuntimeError(f"nginx did not start: {err}{log}")
                time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGQUIT)  # graceful: workers finish, then exit
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def _user() -> str:
    """nginx started as root drops to this user; as anyone else it keeps its own."""
    import pwd

    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    return "root"  # the benchmark's files may sit in a folder only root can read


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):  # either ends it cleanly, nginx with it
        signal.signal(signum, signal.default_int_handler)
    with Nginx(Path(sys.argv[1])) as web:
        print(web.url, web.latency_url or "(no echo module: no latency URL)", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
