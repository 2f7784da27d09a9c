"""Keys from GetHLSEncryptDataKey, through a fake of the API that checks every signature."""

from __future__ import annotations

import base64
import json
import random
import stat
from pathlib import Path

import pytest

from conftest import FIXTURES, sha256
from fake_volc import AK, SK, STATUS_OF, FakeLiveApi, everything_printed, with_api_credentials

from hlsdecrypt.api import ApiKeySource, decode_data_key, region_for
from hlsdecrypt.credentials import Credentials, find_credentials
from hlsdecrypt.errors import ApiError, KeyUnavailable, UsageError
from hlsdecrypt.ratelimit import RateLimiter
from hlsdecrypt.retry import Backoff

LIVE = FIXTURES / "live_rotation"
KEYS = json.loads((LIVE / "keys.json").read_text())  # KeyID -> hex
FIRST_KEY_ID = next(iter(KEYS))

RETRYABLE = ["CommonErr", "InternalError", "InternalError.DB", "InternalServiceError",
             "InternalServiceError.BadResponse", "InternalServiceTimeout", "AccountFlowLimitExceeded",
             "ResourceNotFound", "http429", "garbage", "slow", "drop"]
FATAL = ["InvalidParam", "InvalidParam.BindError", "RequestForbidden", "RequestForbidden.AccountIDNotAllow",
         "RequestForbidden.BillingStatus"]


@pytest.fixture(autouse=True)
def api_env(monkeypatch, tmp_path):
    with_api_credentials(monkeypatch, tmp_path)


@pytest.fixture
def fast_api():
    """The fake at 20 requests/s, so that tests about answers need not wait on the limit."""
    with FakeLiveApi(KEYS, rate=20) as api:
        yield api


def _source(api: FakeLiveApi, tmp_path: Path, **kwargs) -> ApiKeySource:
    return ApiKeySource(Credentials(AK, SK, "test"), endpoint=api.url, rate=api.rate, timeout=0.5,
                        backoff=Backoff(attempts=4, sleep=lambda s: None, rng=random.Random(0)),
                        limiter=RateLimiter(api.rate, "acct", directory=tmp_path / "rl"), **kwargs)


def _decrypt_via_api(run, api: FakeLiveApi, out: Path, *extra: str) -> tuple[int, str]:
    return run("decrypt", LIVE / "index.m3u8", "-o", out, "--key-source", "api", "--api-endpoint", api.url,
               "--api-rate", str(api.rate), *extra)


def test_rotation_stream_decrypts_through_the_api(run, fast_api, tmp_path):
    code, err = _decrypt_via_api(run, fast_api, tmp_path / "out.ts")
    assert code == 0, err
    assert sha256(tmp_path / "out.ts") == sha256(LIVE / "clear.ts")
    assert sorted(fast_api.asked) == sorted(KEYS)  # each KeyID asked once
    assert fast_api.bad_signatures == 0 and fast_api.too_fast == 0


def test_api_is_used_automatically_when_credentials_are_configured(run, fast_api, monkeypatch, tmp_path):
    monkeypatch.setenv("HLSDECRYPT_API_ENDPOINT", fast_api.url)
    code, err = run("decrypt", LIVE / "index.m3u8", "-o", tmp_path / "out.ts", "--api-rate", "20", "-v")
    assert code == 0, err
    assert "key from GetHLSEncryptDataKey" in err
    assert sha256(tmp_path / "out.ts") == sha256(LIVE / "clear.ts")


@pytest.mark.parametrize("fault", RETRYABLE)
def test_retryable_answers_recover(fast_api, tmp_path, fault):
    fast_api.script = [fault]
    source = _source(fast_api, tmp_path)
    assert source.fetch(FIRST_KEY_ID).reveal().hex() == KEYS[FIRST_KEY_ID]
    assert len(fast_api.arrivals) == 2


def test_a_retried_error_recovers_end_to_end(run, fast_api, tmp_path):
    fast_api.script = ["InternalServiceTimeout"]
    code, err = _decrypt_via_api(run, fast_api, tmp_path / "out.ts")
    assert code == 0, err
    assert "InternalServiceTimeout" in err and "retrying" in err
    assert sha256(tmp_path / "out.ts") == sha256(LIVE / "clear.ts")


@pytest.mark.parametrize("code", FATAL)
def test_fatal_errors_stop_at_once_with_code_and_request_id(run, fast_api, tmp_path, code):
    fast_api.script = [code]
    got, err = _decrypt_via_api(run, fast_api, tmp_path / "out.ts")
    assert got == 4
    assert len(fast_api.arrivals) == 1
    line = err.strip().splitlines()[-1]
    assert f"{code}: scripted {code} (HTTP {STATUS_OF[code]}, RequestId 2024050711042" in line
    assert f"KeyID {FIRST_KEY_ID}" in line and "needed by segments 107326-107327" in line
    assert not (tmp_path / "out.ts").exists()


def test_a_wrong_secret_key_is_a_signature_error(run, fast_api, tmp_path, monkeypatch):
    monkeypatch.setenv("VOLC_SECRETKEY", "not-the-secret")
    code, err = _decrypt_via_api(run, fast_api, tmp_path / "out.ts")
    assert code == 4 and "SignatureDoesNotMatch" in err and "RequestId" in err
    assert fast_api.bad_signatures == 1


def test_retries_give_up_and_say_so(fast_api, tmp_path):
    fast_api.script = ["InternalError"] * 10
    with pytest.raises(ApiError, match=r"InternalError: .*RequestId .*gave up after 4 attempts"):
        _source(fast_api, tmp_path).fetch(FIRST_KEY_ID)
    assert len(fast_api.arrivals) == 4


def test_a_missing_key_is_retried_briefly(fast_api, tmp_path):
    with pytest.raises(ApiError, match="ResourceNotFound"):
        _source(fast_api, tmp_path).fetch("no-such-key")
    assert len(fast_api.arrivals) == 3


def test_a_data_key_that_is_not_16_bytes_names_the_key_id_not_the_value(run, fast_api, tmp_path):
    fast_api.script = [("datakey", "2131dadfad23123asd")]  # the documentation's masked example
    code, err = _decrypt_via_api(run, fast_api, tmp_path / "out.ts")
    assert code == 4
    assert f"KeyID {FIRST_KEY_ID}" in err and "not 16 bytes" in err and "2131dadfad23123asd" not in err


@pytest.mark.parametrize("text", ["000102030405060708090a0b0c0d0e0f", "AAECAwQFBgcICQoLDA0ODw==",
                                  "\x00\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f"])
def test_data_key_encodings(text):
    assert decode_data_key(text, "k").reveal() == bytes(range(16))


@pytest.mark.parametrize("text", ["", "abc", "00" * 15, "AAECAwQFBgcICQoLDA0O", None, 12])
def test_bad_data_keys_are_refused(text):
    with pytest.raises(KeyUnavailable, match="KeyID k"):
        decode_data_key(text, "k")


def test_key_cache_spares_the_api_on_a_rerun(run, fast_api, tmp_path):
    cache = tmp_path / "keys.cache"
    for out in ("first.ts", "second.ts"):
        code, err = _decrypt_via_api(run, fast_api, tmp_path / out, "--key-cache", cache)
        assert code == 0, err
        assert sha256(tmp_path / out) == sha256(LIVE / "clear.ts")
    assert len(fast_api.arrivals) == 3  # all from the first run
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert {k: v for k, v in json.loads(cache.read_text()).items()} == KEYS


def test_keys_lists_and_exports_what_decrypt_reads(run, fast_api, tmp_path, capsys):
    export = tmp_path / "exported.json"
    code = run("keys", LIVE / "index.m3u8", "--key-source", "api", "--api-endpoint", fast_api.url,
               "--api-rate", "20", "--export", export)[0]
    assert code == 0
    assert stat.S_IMODE(export.stat().st_mode) == 0o600
    assert json.loads(export.read_text()) == KEYS
    code, err = run("decrypt", LIVE / "index.m3u8", "--keys", export, "--key-source", "none",
                    "-o", tmp_path / "out.ts")
    assert code == 0, err
    assert sha256(tmp_path / "out.ts") == sha256(LIVE / "clear.ts")


def test_keys_lists_key_ids_with_their_segment_counts(run, capsys):
    from hlsdecrypt.cli import main

    assert main(["keys", str(LIVE / "index.m3u8")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in out[1:4]] == [[k, "KeyID", "2"] for k in KEYS]
    assert out[-1] == "3 keys, 6 encrypted parts, 0 clear"


def test_no_secret_appears_in_any_output(fast_api, tmp_path):
    """Full runs, verbose, failing and succeeding: grep everything they print or leave behind."""
    printed = everything_printed(fast_api, LIVE / "index.m3u8", tmp_path, "--key-cache", str(tmp_path / "cache.json"))
    source = _source(fast_api, tmp_path)
    text = "\n".join([printed, repr(source), str(source.credentials), repr(source.credentials)])
    secrets = [AK, SK, *KEYS.values(), *(base64.b64encode(bytes.fromhex(v)).decode() for v in KEYS.values())]
    assert [s for s in secrets if s in text] == []


def test_api_source_requires_credentials(run, monkeypatch, tmp_path):
    monkeypatch.delenv("VOLC_ACCESSKEY")
    code, err = run("decrypt", LIVE / "index.m3u8", "-o", tmp_path / "o.ts", "--key-source", "api")
    assert code == 2 and "VOLC_ACCESSKEY" in err


def test_credentials_are_found_where_sdk_users_keep_them(tmp_path):
    home = tmp_path / "h"
    (home / ".volc").mkdir(parents=True)
    assert find_credentials(environ={}, home=home) is None
    (home / ".volc/config").write_text(json.dumps({"ak": "a2", "sk": "s2"}))
    assert find_credentials(environ={}, home=home).access_key == "a2"
    (home / ".volc/credentials").write_text("[default]\naccess_key_id = a1\nsecret_access_key = s1\n")
    assert find_credentials(environ={}, home=home).secret_key == "s1"
    env = {"VOLC_ACCESSKEY": "a0", "VOLC_SECRETKEY": "s0"}
    assert find_credentials(environ=env, home=home).access_key == "a0"
    assert find_credentials(str(home / ".volc/config"), environ=env, home=home).access_key == "a2"
    (tmp_path / "empty.ini").write_text("[default]\n")
    with pytest.raises(UsageError, match="no access key"):
        find_credentials(str(tmp_path / "empty.ini"))


def test_international_endpoint_implies_its_region():
    assert region_for("https://open.byteplusapi.com") == "ap-singapore-1"
    assert region_for("https://live.volcengineapi.com") == "cn-north-1"


def test_verify_names_a_key_id_the_api_does_not_know(run, fast_api, tmp_path):
    unknown = list(KEYS)[2]
    del fast_api.keys[unknown]
    report = tmp_path / "report.json"
    code, _ = run("verify", LIVE / "index.m3u8", "--key-source", "api", "--api-endpoint", fast_api.url,
                  "--api-rate", "20", "--json", report, "-q")
    assert code == 6
    checks = {c["name"]: c for c in json.loads(report.read_text())["checks"]}
    assert {n for n, c in checks.items() if c["status"] == "fail"} == {"key-availability"}
    (evidence,) = checks["key-availability"]["evidence"]
    assert f"KeyID {unknown}" in evidence and "ResourceNotFound" in evidence and "RequestId" in evidence
