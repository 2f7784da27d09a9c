"""A fake of the live service's OpenAPI on 127.0.0.1: GetHLSEncryptDataKey only.

It checks every request's signature with its own implementation of the V4 scheme (written
from the specification, sharing no code with hlsdecrypt.signer) and, when it stands for
temporary (STS) credentials, that the session token came in a signed ``X-Security-Token``
header; it enforces the account rate limit, records when each request arrived, and answers
with scripted faults on demand.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

from servers import LoopbackServer, QuietHandler

AK, SK = "AKLTfakeaccesskey0001", "ZmFrZXNlY3JldGtleTAwMDE="
#: Temporary credentials, as STS AssumeRole hands them out: they only work with their token.
STS_AK, STS_SK = "AKTPfaketemporarykey0001", "ZmFrZXRlbXBvcmFyeXNlY3JldDAwMDE="
STS_TOKEN = "STS2eyJmYWtlIjoidGVtcG9yYXJ5In0=.fake+session/token"

STATUS_OF = {
    "CommonErr": 200, "InvalidParam": 400, "InvalidParam.BindError": 400, "RequestForbidden": 403,
    "RequestForbidden.AccountIDNotAllow": 403, "RequestForbidden.BillingStatus": 403,
    "ResourceNotFound": 404, "InternalError": 500, "InternalError.DB": 500, "InternalServiceError": 502,
    "InternalServiceError.BadResponse": 502, "InternalServiceTimeout": 504,
    "AccountFlowLimitExceeded": 429,
}

_AUTH = re.compile(r"HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/request, "
                   r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})")


def expected_signature(secret: str, method: str, path: str, raw_query: str, headers: dict[str, str],
                       signed: list[str], date: str, region: str, service: str, x_date: str) -> str:
    """V4 from the specification: canonical request, string to sign, derived key, HMAC."""
    pairs = sorted(parse_qsl(raw_query, keep_blank_values=True))
    query = "&".join(quote(k, safe="~") + "=" + quote(v, safe="~") for k, v in pairs)
    lines = [method, path, query] + [f"{h}:{headers[h].strip()}" for h in signed] + ["", ";".join(signed),
                                                                                     hashlib.sha256(b"").hexdigest()]
    canonical = "\n".join(lines)
    to_sign = "\n".join(["HMAC-SHA256", x_date, f"{date}/{region}/{service}/request",
                         hashlib.sha256(canonical.encode()).hexdigest()])
    k = hmac.new(secret.encode(), date.encode(), "sha256").digest()
    k = hmac.new(k, region.encode(), "sha256").digest()
    k = hmac.new(k, service.encode(), "sha256").digest()
    k = hmac.new(k, b"request", "sha256").digest()
    return hmac.new(k, to_sign.encode(), "sha256").hexdigest()


class FakeLiveApi(LoopbackServer):
    """``keys``: KeyID -> the DataKey string to answer. ``script``: faults to answer, in order,
    before normal service: an error code from STATUS_OF, or "http429", "garbage", "slow", "drop",
    or ("datakey", value), or ("retry-after", 429 or 503, the Retry-After header's value).
    ``session_token``: the credentials are temporary (``STS_AK``/``STS_SK``
    by default) and every request must carry this token, signed; without it, no request may."""

    def __init__(self, keys: dict[str, str], *, rate: float = 1.0, region: str = "cn-north-1",
                 session_token: str | None = None):
        self.keys = keys
        self.rate = rate
        self.region = region
        self.session_token = session_token
        self.access_key, self.secret_key = (STS_AK, STS_SK) if session_token else (AK, SK)
        self.script: list = []
        self.arrivals: list[float] = []  # time.monotonic() of every request
        self.asked: list[str] = []  # KeyID of every request
        self.too_fast = 0
        self.bad_signatures = 0
        self._lock = threading.Lock()
        self._counter = 0
        super().__init__(quiet=True)

    def min_gap(self) -> float:
        times = sorted(self.arrivals)
        return min((b - a for a, b in zip(times, times[1:])), default=float("inf"))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                with api._lock:
                    now = time.monotonic()
                    too_fast = bool(api.arrivals) and now - api.arrivals[-1] < 1.0 / api.rate
                    api.arrivals.append(now)
                    api._counter += 1
                    request_id = f"2024050711042{api._counter:04d}FAKE"
                    fault = api.script.pop(0) if api.script else None
                parts = urlsplit(self.path)
                params = dict(parse_qsl(parts.query))
                key_id = params.get("KeyID", "")
                api.asked.append(key_id)
                problem = self._auth_problem(parts.path, parts.query)
                if problem:
                    api.bad_signatures += 1
                    return self._error(request_id, "SignatureDoesNotMatch", problem, 401)
                if too_fast:
                    api.too_fast += 1
                    return self._error(request_id, "AccountFlowLimitExceeded", "flow limit", 429)
                if params.get("Action") != "GetHLSEncryptDataKey" or params.get("Version") != "2023-01-01":
                    return self._error(request_id, "InvalidActionOrVersion", "bad action", 404)
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault == "slow":
                    time.sleep(1.5)
                if fault == "http429":
                    return self._send(429, b"Too Many Requests", "text/plain")
                if fault == "garbage":
                    return self._send(200, b"<html>proxy error</html>", "text/html")
                if isinstance(fault, str) and fault in STATUS_OF:
                    return self._error(request_id, fault, f"scripted {fault}", STATUS_OF[fault])
                if isinstance(fault, tuple) and fault[0] == "retry-after":
                    code = "AccountFlowLimitExceeded" if fault[1] == 429 else "ServiceUnavailable"
                    return self._error(request_id, code, f"scripted {code}", fault[1], {"Retry-After": fault[2]})
                value = fault[1] if isinstance(fault, tuple) else api.keys.get(key_id)
                if value is None:
                    return self._error(request_id, "ResourceNotFound", "no such key", 404)
                self._send(200, json.dumps({"ResponseMetadata": self._meta(request_id),
                                            "Result": {"DataKey": value}}).encode())

            def _auth_problem(self, path: str, query: str) -> str | None:
                match = _AUTH.fullmatch(self.headers.get("Authorization", ""))
                if not match:
                    return "no or malformed Authorization"
                ak, date, region, service, signed, signature = match.groups()
                headers = {k.lower(): v for k, v in self.headers.items()}
                x_date = headers.get("x-date", "")
                if ak != api.access_key or region != api.region or service != "live" or not x_date.startswith(date):
                    return "wrong credential scope"
                if headers.get("x-content-sha256") != hashlib.sha256(b"").hexdigest():
                    return "wrong X-Content-Sha256"
                sent = datetime.strptime(x_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
                if abs((datetime.now(timezone.utc) - sent).total_seconds()) > 900:
                    return "X-Date too far from now"
                names = signed.split(";")
                if not {"host", "x-date"} <= set(names) or any(n not in headers for n in names):
                    return "required headers not signed"
                token_problem = self._token_problem(headers.get("x-security-token"), names)
                if token_problem:
                    return token_problem
                want = expected_signature(api.secret_key, "GET", path, query, headers, names, date, region, service,
                                          x_date)
                return None if hmac.compare_digest(want, signature) else "signature mismatch"

            @staticmethod
            def _token_problem(token: str | None, signed: list[str]) -> str | None:
                """Temporary credentials need their token, and the token must be covered by the signature."""
                if api.session_token is None:
                    return "X-Security-Token sent with long-term credentials" if token is not None else None
                if token is None:
                    return "temporary credentials without X-Security-Token"
                if "x-security-token" not in signed:
                    return "X-Security-Token not signed"
                same = hmac.compare_digest(token.encode("utf-8", "replace"), api.session_token.encode())
                return None if same else "wrong X-Security-Token"

            def _meta(self, request_id: str) -> dict:
                return {"RequestId": request_id, "Action": "GetHLSEncryptDataKey", "Version": "2023-01-01",
                        "Service": "live", "Region": api.region}

            def _error(self, request_id: str, code: str, message: str, status: int,
                       headers: dict[str, str] | None = None) -> None:
                meta = self._meta(request_id)
                meta["Error"] = {"Code": code, "CodeN": 10000 + status, "Message": message}
                self._send(status, json.dumps({"ResponseMetadata": meta}).encode(), headers=headers)

            def _send(self, status: int, body: bytes, content_type: str = "application/json",
                      headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def everything_printed(api: FakeLiveApi, playlist: Path, tmp_path: Path, *extra: str) -> str:
    """Two verbose decrypts through ``api``, one failing (a retried error, then a fatal one) and one
    passing: all they print and all they leave in the cache folder, as one text to search for secrets."""
    api.script = ["InternalError", "RequestForbidden"]
    env = {**os.environ, "HLSDECRYPT_API_ENDPOINT": api.url}
    base = [sys.executable, "-m", "hlsdecrypt", "decrypt", str(playlist), "-o", str(tmp_path / "out.ts"),
            "--api-rate", "20", "-v"]
    failed = subprocess.run(base, env=env, capture_output=True, text=True)
    passed = subprocess.run([*base, *extra], env=env, capture_output=True, text=True)
    assert failed.returncode == 4 and "RequestForbidden" in failed.stderr
    assert passed.returncode == 0 and "key from GetHLSEncryptDataKey" in passed.stderr
    left_behind = [p.read_bytes().decode("latin-1") for p in (tmp_path / "cache" / "hlsdecrypt").iterdir()]
    return "\n".join([failed.stdout, failed.stderr, passed.stdout, passed.stderr, *left_behind])


def with_api_credentials(monkeypatch, home: Path) -> None:
    """The fake's credentials in the environment, a private rate-limit folder, no real config files."""
    monkeypatch.setenv("VOLC_ACCESSKEY", AK)
    monkeypatch.setenv("VOLC_SECRETKEY", SK)
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("HOME", str(home / "home"))
    monkeypatch.delenv("HLSDECRYPT_API_ENDPOINT", raising=False)
