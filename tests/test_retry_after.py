"""``Retry-After`` as seconds or as an HTTP date (RFC 9110 §10.2.3), read once for the API and for segments.

End to end, the sleep is injected: the tests assert on what it was asked to wait, never on time passing.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from urllib.parse import unquote, urlsplit

import pytest

from conftest import FIXTURES, sha256
from fake_volc import AK, SK, FakeLiveApi
from servers import StaticServer

from hlsdecrypt import Fetcher, decrypt, key_chain
from hlsdecrypt.api import ApiKeySource
from hlsdecrypt.credentials import Credentials
from hlsdecrypt.ratelimit import RateLimiter
from hlsdecrypt.retry import Backoff, retry_after_seconds

NOW = datetime(2026, 10, 21, 7, 27, 30, tzinfo=timezone.utc)
KEYS = json.loads((FIXTURES / "live_rotation/keys.json").read_text())
FIRST_KEY_ID = next(iter(KEYS))
AN_HOUR = 3600.0
#: How far the client's clock may have moved between the server writing a date and the client
#: reading it (dates have whole seconds): wide, so that a busy machine cannot fail the test.
SLACK = 30.0


@pytest.mark.parametrize("value, seconds", [
    ("120", 120.0),
    ("0", 0.0),
    (" 7 ", 7.0),
    ("1.5", 1.5),
    ("Wed, 21 Oct 2026 07:28:00 GMT", 30.0),  # the IMF-fixdate of RFC 9110
    ("Wednesday, 21-Oct-26 07:28:00 GMT", 30.0),  # obsolete RFC 850 form, which recipients must read
    ("Wed Oct 21 07:28:00 2026", 30.0),  # obsolete asctime form, no zone: GMT
    ("Wed, 21 Oct 2026 09:28:00 +0200", 30.0),  # not HTTP, but a zone is a zone
    ("Wed, 21 Oct 2026 07:27:00 GMT", 0.0),  # in the past: no wait, never a negative one
])
def test_retry_after_is_read_as_seconds_or_as_a_date(value, seconds):
    assert retry_after_seconds(value, now=NOW) == seconds


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "+5", "1e3", "inf", "nan", "0x10", "5 s",
                                   "Wed, 32 Oct 2026 07:28:00 GMT", "Wed, 21 Oct 2026 25:00:00 GMT", "Wed, 21 Oct"])
def test_garbage_retry_after_is_no_wait(value):
    assert retry_after_seconds(value, now=NOW) == 0.0


def test_a_date_is_counted_from_the_current_time_by_default():
    in_an_hour = format_datetime(datetime.now(timezone.utc) + timedelta(hours=1), usegmt=True)
    assert AN_HOUR - SLACK < retry_after_seconds(in_an_hour) <= AN_HOUR


def _in_an_hour() -> str:
    return format_datetime(datetime.now(timezone.utc) + timedelta(seconds=AN_HOUR), usegmt=True)


def _api_source(api: FakeLiveApi, tmp_path, waits: list[float]) -> ApiKeySource:
    # A cap wide enough (the wait is held to 3 caps) that an hour is waited as asked.
    backoff = Backoff(attempts=3, base=1.0, cap=AN_HOUR, sleep=waits.append, rng=random.Random(0))
    # Sent well below the fake's limit: these tests are about waiting for Retry-After, not the rate.
    rate = api.rate / 4
    return ApiKeySource(Credentials(AK, SK, "test"), endpoint=api.url, rate=rate, timeout=5, backoff=backoff,
                        limiter=RateLimiter(rate, "acct", directory=tmp_path / "rl"))


@pytest.mark.parametrize("status", [429, 503])
def test_the_api_client_waits_until_the_date_the_server_names(tmp_path, status):
    waits: list[float] = []
    with FakeLiveApi(KEYS, rate=20) as api:
        api.script = [("retry-after", status, _in_an_hour())]
        key = _api_source(api, tmp_path, waits).fetch(FIRST_KEY_ID)
    assert key.reveal().hex() == KEYS[FIRST_KEY_ID]
    assert len(api.arrivals) == 2
    assert len(waits) == 1 and AN_HOUR - SLACK < waits[0] <= AN_HOUR


def test_a_date_in_the_past_leaves_the_wait_to_the_backoff(tmp_path):
    waits: list[float] = []
    with FakeLiveApi(KEYS, rate=20) as api:
        api.script = [("retry-after", 503, "Wed, 21 Oct 2015 07:28:00 GMT")]
        _api_source(api, tmp_path, waits).fetch(FIRST_KEY_ID)
    assert waits == [random.Random(0).uniform(0, 1.0)]  # the first jittered delay, and nothing more


class DatedRetryServer(StaticServer):
    """A StaticServer whose first answers for a path are ``dated[path]``: (status, Retry-After value)."""

    def __init__(self, root, **kwargs):
        self.dated: dict[str, list[tuple[int, str]]] = {}
        super().__init__(root, **kwargs)

    def _handler(self):
        server, static = self, super()._handler()

        class Handler(static):
            def do_GET(self) -> None:
                path = unquote(urlsplit(self.path).path)
                pending = server.dated.get(path)
                if not pending:
                    return super().do_GET()
                server.hits[path] += 1
                status, value = pending.pop(0)
                self._send(status, b"busy", {"Retry-After": value})

        return Handler


@pytest.mark.parametrize("status", [429, 503])
def test_a_segment_is_fetched_again_at_the_date_the_server_names(fixtures, tmp_path, status):
    waits: list[float] = []
    fetcher = Fetcher(timeout=5, backoff=Backoff(attempts=3, cap=AN_HOUR, sleep=waits.append, rng=random.Random(0)))
    keys = key_chain(source="uri", fetcher=fetcher)
    with DatedRetryServer(fixtures) as server:
        server.dated["/implicit_iv/seg2.ts"] = [(status, _in_an_hour())]
        decrypt(f"{server.url}/implicit_iv/index.m3u8", str(tmp_path / "out.ts"), keys=keys, fetcher=fetcher)
    keys.close()
    assert sha256(tmp_path / "out.ts") == sha256(FIXTURES / "implicit_iv/clear.ts")
    assert server.hits["/implicit_iv/seg2.ts"] == 2
    assert len(waits) == 1 and AN_HOUR - SLACK < waits[0] <= AN_HOUR
