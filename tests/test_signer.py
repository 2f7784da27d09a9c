"""The request signer against golden vectors made by the official Volcengine SDK.

The expected headers below were produced by ``volcengine`` 1.0.229 from PyPI, with
``volcengine.auth.SignerV4.SignerV4.sign`` on a GET ``Request`` (path ``/``, empty body,
headers ``Host`` and ``User-Agent``), ``Credentials(ak, sk, "live", region)``, and
``SignerV4.get_current_format_date`` patched to return the X-Date shown. The SDK is not a
dependency: these strings are its recorded output. tests/record_sdk_vectors.py is the recipe
(run with the SDK in a throwaway venv, as its docstring says): it prints every vector below,
the session token one recorded both through ``SignerV4.sign`` with
``Credentials(..., session_token=...)`` and through ``LiveService.set_session_token``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest

from hlsdecrypt.credentials import Credentials
from hlsdecrypt.signer import canonical_host, sign_get

AK, SK = "AKLTexampleaccesskeyid", "ZXhhbXBsZXNlY3JldGtleQ=="
PARAMS = [("Action", "GetHLSEncryptDataKey"), ("Version", "2023-01-01")]

VECTORS = [
    ("live.volcengineapi.com", "08e765a4da0c4028755c3c", "cn-north-1", "20240507T095902Z",
     "dd6d4bd64cf653efaa366288690117a67689cfea15834df1a34991f57f4c93be"),
    ("127.0.0.1:8080", "a b/c+d~é", "cn-north-1", "20240507T095902Z",
     "ba724ee5154fe291d42690fb630b07827667a9e28fd2fcb4f193f5fca57e51f1"),
    ("open.byteplusapi.com", "8fcd39af7ab3b6f44e97ad8e07", "ap-singapore-1", "20261126T235959Z",
     "f7e23f40168b7574c2f964c8920bf851dc6cc627588d883473bcfa92dcb5e36a"),
]


@pytest.mark.parametrize("host, key_id, region, x_date, signature", VECTORS, ids=[v[0] for v in VECTORS])
def test_signature_matches_the_official_sdk(host, key_id, region, x_date, signature):
    now = datetime.strptime(x_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    query, headers = sign_get(host, "/", [*PARAMS, ("KeyID", key_id)], Credentials(AK, SK), region, "live", now)
    assert headers == {
        "Host": host,
        "X-Date": x_date,
        "X-Content-Sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "Authorization": f"HMAC-SHA256 Credential={AK}/{x_date[:8]}/{region}/live/request, "
                         f"SignedHeaders=host;x-content-sha256;x-date, Signature={signature}",
    }


# Temporary (STS) credentials, as recorded from the SDK with a session token.
STS_AK, STS_SK = "AKTPexampletemporarykeyid", "VGVtcG9yYXJ5U2VjcmV0S2V5RXhhbXBsZQ=="
STS_TOKEN = "STS2eyJMVFJvbGVTZXNzaW9uIjoiZXhhbXBsZSJ9+/=.example-token"


def test_session_token_is_sent_and_signed_as_the_official_sdk_does():
    now = datetime(2025, 3, 12, 8, 45, 1, tzinfo=timezone.utc)
    params = [*PARAMS, ("KeyID", "08e765a4da0c4028755c3c")]
    _, headers = sign_get("live.volcengineapi.com", "/", params, Credentials(STS_AK, STS_SK, session_token=STS_TOKEN),
                          "cn-north-1", "live", now)
    assert headers == {
        "Host": "live.volcengineapi.com",
        "X-Date": "20250312T084501Z",
        "X-Content-Sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "X-Security-Token": STS_TOKEN,
        "Authorization": f"HMAC-SHA256 Credential={STS_AK}/20250312/cn-north-1/live/request, "
                         "SignedHeaders=host;x-content-sha256;x-date;x-security-token, "
                         "Signature=9dbd7b06193b8c2bec80263788d35c7a8cd507fdb4a44bb58d78b8490fa8e241",
    }


def test_without_a_session_token_no_token_header_is_sent_or_signed():
    _, headers = sign_get("h", "/", PARAMS, Credentials(AK, SK), "r", "live")
    assert "X-Security-Token" not in headers
    assert "SignedHeaders=host;x-content-sha256;x-date," in headers["Authorization"]


def test_canonical_query_is_sorted_and_percent_encoded():
    query, _ = sign_get("h", "/", [*PARAMS, ("KeyID", "a b/c+d~é")], Credentials(AK, SK), "r", "live")
    assert query == "Action=GetHLSEncryptDataKey&KeyID=a%20b%2Fc%2Bd~%C3%A9&Version=2023-01-01"


def test_default_ports_are_not_signed():
    assert canonical_host("live.volcengineapi.com:443") == "live.volcengineapi.com"
    assert canonical_host("127.0.0.1:8080") == "127.0.0.1:8080"


def test_the_debug_log_shows_what_was_signed_but_never_the_session_token(caplog):
    caplog.set_level(logging.DEBUG, logger="hlsdecrypt")
    sign_get("h", "/", PARAMS, Credentials(STS_AK, STS_SK, session_token=STS_TOKEN), "r", "live")
    text = caplog.text
    assert "string to sign:" in text and "x-date:" in text and "<session token>" in text
    assert STS_TOKEN not in text and STS_SK not in text
