"""A loopback HTTPS server whose certificate no client trusts: ``selfsigned.pem`` (made once with
``openssl req -x509 -newkey rsa:2048 -nodes -days 36500 -subj /CN=127.0.0.1
-addext subjectAltName=IP:127.0.0.1``; a test key, guarding nothing)."""

from __future__ import annotations

import ssl
from pathlib import Path

from servers import StaticServer

PEM = Path(__file__).with_name("selfsigned.pem")


class TlsStaticServer(StaticServer):
    def __init__(self, root: Path):
        super().__init__(root, quiet=True)
        self.handshakes = 0
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(PEM)
        plain_get_request = self._httpd.get_request

        def get_request():
            sock, address = plain_get_request()
            self.handshakes += 1
            return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

        self._httpd.get_request = get_request

    @property
    def url(self) -> str:
        return super().url.replace("http://", "https://")
