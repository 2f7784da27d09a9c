"""Volcengine OpenAPI request signing (HMAC-SHA256, "V4"), one small function per step.

Follows the official SDK's ``volcengine/auth/SignerV4.py``: the signed headers are ``host``,
``x-content-sha256`` and ``x-date``, and with temporary (STS) credentials ``x-security-token``,
which carries the session token and is signed like every ``X-`` header; the credential scope is
``date/region/service/request``; the signing key chains HMACs over the date, region, service
and ``request``. The canonical request holds the session token: never log it whole.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import datetime, timezone
from typing import Iterable
from urllib.parse import quote

from .credentials import Credentials

log = logging.getLogger("hlsdecrypt")

ALGORITHM = "HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    """Sorted by name, RFC 3986 percent-encoding (space is %20, ``~`` stays)."""
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params))


def canonical_host(netloc: str) -> str:
    """The Host value as signed: without a default port."""
    host, _, port = netloc.rpartition(":")
    return host if host and port in ("80", "443") else netloc


def canonical_request(method: str, path: str, query: str, headers: dict[str, str], body_hash: str) -> str:
    names = sorted(headers)
    canonical_headers = "".join(f"{name}:{headers[name]}\n" for name in names)
    return "\n".join([method, quote(path or "/", safe="/~"), query, canonical_headers, ";".join(names), body_hash])


def credential_scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/request"


def string_to_sign(x_date: str, scope: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, x_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = secret_key.encode()
    for part in (date, region, service, "request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign_get(netloc: str, path: str, params: Iterable[tuple[str, str]], credentials: Credentials,
             region: str, service: str, now: datetime | None = None) -> tuple[str, dict[str, str]]:
    """Sign a GET with an empty body: returns the canonical query string to send and the headers.

    The keys stay inside their ``Credentials``; a session token (temporary credentials) is sent
    as ``X-Security-Token`` and signed.
    """
    access_key, secret_key = credentials.access_key, credentials.secret_key
    session_token = credentials.session_token or ""
    x_date = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    query = canonical_query(params)
    signed = {"host": canonical_host(netloc), "x-content-sha256": EMPTY_SHA256, "x-date": x_date}
    if session_token:
        signed["x-security-token"] = session_token
    scope = credential_scope(x_date[:8], region, service)
    canonical = canonical_request("GET", path, query, signed, EMPTY_SHA256)
    to_sign = string_to_sign(x_date, scope, canonical)
    if log.isEnabledFor(logging.DEBUG):  # what a user needs when the server says SignatureDoesNotMatch
        shown = canonical.replace(session_token, "<session token>") if session_token else canonical
        log.debug("signed request:\n%s\nstring to sign:\n%s", shown, to_sign)
    key = signing_key(secret_key, x_date[:8], region, service)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers = {
        "Host": signed["host"],
        "X-Date": x_date,
        "X-Content-Sha256": EMPTY_SHA256,
        **({"X-Security-Token": session_token} if session_token else {}),
        "Authorization": f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={';'.join(sorted(signed))}, "
                         f"Signature={signature}",
    }
    return query, headers
