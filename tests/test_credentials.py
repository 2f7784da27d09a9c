"""Where access keys and STS session tokens are found, and that a session token is sent, signed, and never shown."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from conftest import FIXTURES, sha256
from fake_volc import AK, SK, STS_AK, STS_SK, STS_TOKEN, FakeLiveApi, everything_printed

from hlsdecrypt.credentials import Credentials, find_credentials
from hlsdecrypt.signer import sign_get

LIVE = FIXTURES / "live_rotation"
KEYS = json.loads((LIVE / "keys.json").read_text())  # KeyID -> hex
FIRST_KEY_ID = next(iter(KEYS))
STS_ENV = {"VOLCENGINE_ACCESS_KEY": STS_AK, "VOLCENGINE_SECRET_KEY": STS_SK, "VOLCENGINE_SESSION_TOKEN": STS_TOKEN}
ALL_NAMES = ("VOLC_ACCESSKEY", "VOLC_SECRETKEY", *STS_ENV)


@pytest.fixture(autouse=True)
def sts_env(monkeypatch, tmp_path):
    """Temporary credentials in the environment only, a private rate-limit folder, no real config files."""
    for name in ALL_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in STS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HLSDECRYPT_API_ENDPOINT", raising=False)


@pytest.fixture
def warned():
    """What the hlsdecrypt logger warns, whatever an earlier CLI run did to its handlers."""
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("hlsdecrypt")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.WARNING
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def sts_api():
    with FakeLiveApi(KEYS, rate=20, session_token=STS_TOKEN) as api:
        yield api


def _decrypt(run, api: FakeLiveApi, out: Path, *extra: str) -> tuple[int, str]:
    return run("decrypt", LIVE / "index.m3u8", "-o", out, "--key-source", "api", "--api-endpoint", api.url,
               "--api-rate", str(api.rate), "-v", *extra)


# -- where they are found -----------------------------------------------------------------


def test_the_newer_sdks_variables_give_temporary_credentials(tmp_path):
    found = find_credentials(environ=STS_ENV, home=tmp_path)
    assert (found.access_key, found.secret_key, found.session_token) == (STS_AK, STS_SK, STS_TOKEN)
    assert found.origin == "VOLCENGINE_ACCESS_KEY/VOLCENGINE_SECRET_KEY/VOLCENGINE_SESSION_TOKEN"


def test_the_newer_sdks_pair_without_a_token_gives_long_term_credentials(tmp_path):
    found = find_credentials(environ={"VOLCENGINE_ACCESS_KEY": AK, "VOLCENGINE_SECRET_KEY": SK}, home=tmp_path)
    assert (found.access_key, found.session_token) == (AK, "")
    assert found.origin == "VOLCENGINE_ACCESS_KEY/VOLCENGINE_SECRET_KEY"


def test_the_older_pair_comes_first_and_the_unused_set_is_named(tmp_path, warned):
    env = {"VOLC_ACCESSKEY": AK, "VOLC_SECRETKEY": SK, **STS_ENV}
    found = find_credentials(environ=env, home=tmp_path)
    assert (found.access_key, found.secret_key, found.session_token) == (AK, SK, "")  # never mixed with the token
    assert warned == ["two different access keys in the environment: using VOLC_ACCESSKEY/VOLC_SECRETKEY, not "
                      "VOLCENGINE_ACCESS_KEY/VOLCENGINE_SECRET_KEY/VOLCENGINE_SESSION_TOKEN"]


def test_a_temporary_key_set_twice_is_taken_with_its_token(tmp_path, warned):
    env = {"VOLC_ACCESSKEY": STS_AK, "VOLC_SECRETKEY": STS_SK, **STS_ENV}
    found = find_credentials(environ=env, home=tmp_path)
    assert (found.access_key, found.session_token) == (STS_AK, STS_TOKEN)
    assert warned == []


def test_a_token_without_its_keys_is_ignored_with_a_warning(tmp_path, warned):
    env = {"VOLC_ACCESSKEY": AK, "VOLC_SECRETKEY": SK, "VOLCENGINE_SESSION_TOKEN": STS_TOKEN}
    found = find_credentials(environ=env, home=tmp_path)
    assert (found.access_key, found.session_token) == (AK, "")
    assert warned == ["VOLCENGINE_SESSION_TOKEN is set without VOLCENGINE_ACCESS_KEY and VOLCENGINE_SECRET_KEY: "
                      "ignored"]


def test_the_environment_comes_before_the_files(tmp_path):
    (tmp_path / ".volc").mkdir()
    (tmp_path / ".volc/credentials").write_text("[default]\naccess_key_id = a1\nsecret_access_key = s1\n")
    assert find_credentials(environ=STS_ENV, home=tmp_path).access_key == STS_AK
    assert find_credentials(environ={}, home=tmp_path).access_key == "a1"


def test_session_token_in_the_ini_credentials_file(tmp_path):
    (tmp_path / ".volc").mkdir()
    (tmp_path / ".volc/credentials").write_text(
        f"[default]\naccess_key_id = {STS_AK}\nsecret_access_key = {STS_SK}\nsession_token = {STS_TOKEN}\n")
    found = find_credentials(environ={}, home=tmp_path)
    assert (found.access_key, found.secret_key, found.session_token) == (STS_AK, STS_SK, STS_TOKEN)


@pytest.mark.parametrize("config", [
    {"ak": STS_AK, "sk": STS_SK, "session_token": STS_TOKEN},
    # The Credentials of an STS AssumeRole answer, saved as they come.
    {"AccessKeyId": STS_AK, "SecretAccessKey": STS_SK, "SessionToken": STS_TOKEN,
     "CurrentTime": "2025-03-12T16:45:01+08:00", "ExpiredTime": "2025-03-12T17:45:01+08:00"},
], ids=["sdk-config", "assume-role-answer"])
def test_session_token_in_the_json_config(tmp_path, config):
    (tmp_path / ".volc").mkdir()
    (tmp_path / ".volc/config").write_text(json.dumps(config))
    found = find_credentials(environ={}, home=tmp_path)
    assert (found.access_key, found.secret_key, found.session_token) == (STS_AK, STS_SK, STS_TOKEN)
    assert find_credentials(str(tmp_path / ".volc/config"), environ={}).session_token == STS_TOKEN


def test_credentials_never_show_keys_or_token():
    creds = Credentials(STS_AK, STS_SK, "somewhere", STS_TOKEN)
    for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert not [s for s in (STS_AK, STS_SK, STS_TOKEN) if s in text]
    assert repr(creds) == "Credentials(<hidden>, temporary, from somewhere)"
    assert repr(Credentials(AK, SK, "env")) == "Credentials(<hidden>, from env)"


# -- sent and signed, end to end ----------------------------------------------------------


def test_temporary_credentials_decrypt_through_the_api(run, sts_api, tmp_path):
    code, err = _decrypt(run, sts_api, tmp_path / "out.ts")
    assert code == 0, err
    assert sha256(tmp_path / "out.ts") == sha256(LIVE / "clear.ts")
    assert sts_api.bad_signatures == 0 and sorted(sts_api.asked) == sorted(KEYS)
    assert "VOLCENGINE_SESSION_TOKEN" in err  # -v names where the credentials came from
    assert not [s for s in (STS_AK, STS_SK, STS_TOKEN) if s in err]


def test_temporary_credentials_from_a_credentials_file(run, sts_api, tmp_path, monkeypatch):
    for name in STS_ENV:
        monkeypatch.delenv(name)
    file = tmp_path / "sts.ini"
    file.write_text(f"[default]\naccess_key_id = {STS_AK}\nsecret_access_key = {STS_SK}\n"
                    f"session_token = {STS_TOKEN}\n")
    code, err = _decrypt(run, sts_api, tmp_path / "out.ts", "--credentials", file)
    assert code == 0, err
    assert sha256(tmp_path / "out.ts") == sha256(LIVE / "clear.ts")


def test_temporary_credentials_without_their_token_are_refused(run, sts_api, tmp_path, monkeypatch):
    monkeypatch.delenv("VOLCENGINE_SESSION_TOKEN")
    code, err = _decrypt(run, sts_api, tmp_path / "out.ts")
    assert code == 4 and "SignatureDoesNotMatch: temporary credentials without X-Security-Token" in err
    assert sts_api.bad_signatures == 1


def test_no_secret_of_temporary_credentials_appears_in_any_output(sts_api, tmp_path):
    """Full runs, verbose, failing and succeeding: grep everything they print or leave behind."""
    text = everything_printed(sts_api, LIVE / "index.m3u8", tmp_path)
    assert [s for s in (STS_AK, STS_SK, STS_TOKEN) if s in text] == []


# -- the fake checks the token as the service does ------------------------------------------


def _get(api: FakeLiveApi, ak: str, sk: str, token: str = "", extra: dict[str, str] | None = None) -> str:
    """A request signed by hand, with headers added after signing: the SignatureDoesNotMatch message or 'ok'."""
    netloc = urlsplit(api.url).netloc
    query, headers = sign_get(netloc, "/", [("Action", "GetHLSEncryptDataKey"), ("Version", "2023-01-01"),
                                            ("KeyID", FIRST_KEY_ID)], Credentials(ak, sk, session_token=token),
                              api.region, "live", datetime.now(timezone.utc))
    response = requests.get(f"{api.url}/?{query}", headers={**headers, **(extra or {})}, timeout=5)
    error = response.json()["ResponseMetadata"].get("Error")
    return f"{error['Code']}: {error['Message']}" if error else "ok"


def test_the_fake_accepts_only_a_signed_token(sts_api):
    assert _get(sts_api, STS_AK, STS_SK, STS_TOKEN) == "ok"
    assert _get(sts_api, STS_AK, STS_SK) == "SignatureDoesNotMatch: temporary credentials without X-Security-Token"
    unsigned = _get(sts_api, STS_AK, STS_SK, extra={"X-Security-Token": STS_TOKEN})
    assert unsigned == "SignatureDoesNotMatch: X-Security-Token not signed"
    wrong = _get(sts_api, STS_AK, STS_SK, "STS2another-token")
    assert wrong == "SignatureDoesNotMatch: wrong X-Security-Token"
    # The right token, but the signature was made over another: the token's value is signed.
    swapped = _get(sts_api, STS_AK, STS_SK, "STS2another-token", extra={"X-Security-Token": STS_TOKEN})
    assert swapped == "SignatureDoesNotMatch: signature mismatch"
    assert sts_api.bad_signatures == 4


def test_the_fake_refuses_a_token_with_long_term_credentials():
    with FakeLiveApi(KEYS, rate=20) as api:
        assert _get(api, AK, SK) == "ok"
        assert _get(api, AK, SK, STS_TOKEN) == "SignatureDoesNotMatch: X-Security-Token sent with long-term credentials"
