"""The live service's key API: ``GetHLSEncryptDataKey`` as a key source.

Each request is signed (``signer``), waits its turn under the account's rate limit
(``ratelimit``), and its answer is classified: a key, an error worth retrying (server errors,
``CommonErr``, flow limits, HTTP 429, timeouts, dropped connections, garbled bodies), a
``ResourceNotFound`` retried briefly (a live recording's key may appear late), or a fatal
error (bad parameters, no permission, bad signature), reported with its code and RequestId.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .credentials import Credentials
from .crypto import DataKey
from .defaults import DEFAULT_ENDPOINT, DEFAULT_REGION
from .errors import ApiError, KeyUnavailable, plural
from .http import Answer, Failure, HttpClient
from .playlist import KeyRef
from .ratelimit import Limiter, RateLimiter
from .retry import Backoff, Retry, retry_after_seconds
from .signer import sign_get

log = logging.getLogger("hlsdecrypt")

ACTION, VERSION, SERVICE = "GetHLSEncryptDataKey", "2023-01-01", "live"
#: The same API sold internationally; its region differs, so an endpoint implies a region.
REGIONS = {"open.byteplusapi.com": "ap-singapore-1"}

RETRYABLE_CODES = ("CommonErr", "InternalError", "InternalServiceError", "InternalServiceTimeout",
                   "ServiceUnavailable", "Throttling")
NOT_FOUND_CODES = ("ResourceNotFound",)
NOT_FOUND_RETRIES = 2
#: The API answers a few hundred bytes of JSON; more is not its answer.
MAX_ANSWER = 64 * 1024


def endpoint_from_env() -> str:
    return os.environ.get("HLSDECRYPT_API_ENDPOINT") or DEFAULT_ENDPOINT


def region_for(endpoint: str) -> str:
    return REGIONS.get(urlsplit(endpoint).hostname or "", DEFAULT_REGION)


FLOW_LIMIT_MARKS = ("flowlimit", "ratelimit", "toomanyrequests", "limitexceeded")


def _is_flow_limit(code: str) -> bool:
    """The common flow-limit codes vary (AccountFlowLimitExceeded, RequestLimitExceeded, ...)."""
    return any(mark in code.lower() for mark in FLOW_LIMIT_MARKS)


def decode_data_key(value: object, key_id: str) -> DataKey:
    """A DataKey string as 32 hex digits, base64 of 16 bytes, or 16 raw characters."""
    text = value if isinstance(value, str) else ""
    if len(text) == 32:
        try:
            return DataKey(bytes.fromhex(text))
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text, validate=True)
        if len(raw) == 16:
            return DataKey(raw)
    except (binascii.Error, ValueError):
        pass
    encoded = text.encode("utf-8")
    if len(encoded) == 16:
        return DataKey(encoded)
    raise KeyUnavailable(f"KeyID {key_id}: the DataKey is not 16 bytes as hex, base64 or raw text")


@dataclass
class ApiKeySource:
    """Fetches the key of a KeyID from the API; keys without a KeyID are not its business."""

    credentials: Credentials
    endpoint: str = DEFAULT_ENDPOINT
    region: str = DEFAULT_REGION
    rate: float = 1.0
    timeout: float = 10.0
    backoff: Backoff = field(default_factory=lambda: Backoff(attempts=6, base=1.0, cap=30.0))
    limiter: Limiter | None = None
    name: str = ACTION
    _http: HttpClient | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        account = f"{self.credentials.access_key}@{urlsplit(self.endpoint).netloc}"
        # a request holds the account's turn until it is answered: its deadline bounds the lease
        deadline = 3 * self.timeout
        self._limiter = self.limiter or RateLimiter(self.rate, account, lease=deadline + 5)
        self._http = self._http or HttpClient(timeout=self.timeout, deadline=deadline, pool_size=2)

    def __repr__(self) -> str:
        return f"ApiKeySource({self.endpoint}, region {self.region})"

    @property
    def description(self) -> str:
        return f"{self.name} at {self.endpoint} ({self.region}, {self.credentials.origin})"

    def lookup(self, ref: KeyRef) -> DataKey | None:
        return self.fetch(ref.key_id) if ref.key_id else None

    def fetch(self, key_id: str) -> DataKey:
        """The key of ``key_id``, retrying what is worth retrying; ApiError otherwise."""
        not_found = 0

        def retry_on(exc: Exception) -> Retry | None:
            nonlocal not_found
            if not isinstance(exc, ApiError):
                return None
            if exc.code in NOT_FOUND_CODES:  # a live recording's key may appear late: a little patience
                not_found += 1
                return Retry(str(exc)) if not_found <= NOT_FOUND_RETRIES else None
            return Retry(str(exc), exc.retry_after) if exc.retryable else None

        def give_up(exc: Exception, attempts: int) -> ApiError:
            assert isinstance(exc, ApiError)
            return ApiError(f"{exc} (gave up after {plural(attempts, 'attempt')})", code=exc.code,
                            request_id=exc.request_id, status=exc.status)

        return self.backoff.run(lambda: self._request(key_id), retry_on=retry_on, give_up=give_up, what=ACTION)

    def _request(self, key_id: str) -> DataKey:
        parts = urlsplit(self.endpoint)
        path = parts.path or "/"
        query, headers = sign_get(parts.netloc, path, [("Action", ACTION), ("Version", VERSION), ("KeyID", key_id)],
                                  self.credentials, self.region, SERVICE)
        url = f"{parts.scheme}://{parts.netloc}{path}?{query}"
        what = f"KeyID {key_id}"
        assert self._http is not None
        try:
            with self._limiter.turn():  # held until the answer is in: see ratelimit
                answer = self._http.get(url, limit=MAX_ANSWER, headers=headers)
        except Failure as exc:
            raise ApiError(f"{what}: {self.endpoint}: {exc}", retryable=exc.retryable) from None
        return self._answer(answer, key_id, what)

    def _answer(self, answer: Answer, key_id: str, what: str) -> DataKey:
        status = answer.status
        try:
            body = json.loads(bytes(answer.body))
            meta = body.get("ResponseMetadata") or {}
        except (ValueError, AttributeError):
            raise ApiError(f"{what}: HTTP {status} with a body that is not the API's JSON", status=status,
                           retryable=True, retry_after=retry_after_seconds(answer.headers.get("Retry-After"))) from None
        request_id = str(meta.get("RequestId") or answer.headers.get("X-Tt-Logid") or "-")
        err = meta.get("Error")
        if err or status != 200:
            code = str((err or {}).get("Code") or f"HTTP{status}")
            message = str((err or {}).get("Message") or "").strip() or "-"
            retryable = (code.startswith(RETRYABLE_CODES) or _is_flow_limit(code) or status == 429 or status >= 500)
            raise ApiError(f"{what}: {code}: {message} (HTTP {status}, RequestId {request_id})", code=code,
                           request_id=request_id, status=status, retryable=retryable,
                           retry_after=retry_after_seconds(answer.headers.get("Retry-After")))
        log.debug("%s: HTTP %d, RequestId %s", what, status, request_id)
        result = body.get("Result") or {}
        return decode_data_key(result.get("DataKey"), key_id)

