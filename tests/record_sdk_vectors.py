"""Records the golden vectors of tests/test_signer.py from the official SDK (not a dependency).

Run it with the SDK in a throwaway venv, never in the project's environment:

    python3 -m venv /tmp/volc && /tmp/volc/bin/pip install volcengine==1.0.229
    /tmp/volc/bin/python tests/record_sdk_vectors.py

It signs GET / with ``volcengine.auth.SignerV4.SignerV4.sign``, the clock patched to the X-Date
of each vector, and prints the headers the SDK set. The session token vector is then recorded a
second way, as a user of the SDK would make it: ``LiveService`` with ``set_session_token``,
calling ``get_hls_encrypt_data_key`` through a transport that captures the request instead of
sending it (no network); the script checks that both ways agree.
"""

import requests
from volcengine.auth.SignerV4 import SignerV4
from volcengine.live.v20230101.live_service import LiveService
from volcengine.base.Request import Request
from volcengine.Credentials import Credentials

PARAMS = [("Action", "GetHLSEncryptDataKey"), ("Version", "2023-01-01")]
AK, SK = "AKLTexampleaccesskeyid", "ZXhhbXBsZXNlY3JldGtleQ=="
STS_AK, STS_SK = "AKTPexampletemporarykeyid", "VGVtcG9yYXJ5U2VjcmV0S2V5RXhhbXBsZQ=="
STS_TOKEN = "STS2eyJMVFJvbGVTZXNzaW9uIjoiZXhhbXBsZSJ9+/=.example-token"

CASES = [  # host, KeyID, region, X-Date, (ak, sk, session token)
    ("live.volcengineapi.com", "08e765a4da0c4028755c3c", "cn-north-1", "20240507T095902Z", (AK, SK, "")),
    ("127.0.0.1:8080", "a b/c+d~é", "cn-north-1", "20240507T095902Z", (AK, SK, "")),
    ("open.byteplusapi.com", "8fcd39af7ab3b6f44e97ad8e07", "ap-singapore-1", "20261126T235959Z", (AK, SK, "")),
    ("live.volcengineapi.com", "08e765a4da0c4028755c3c", "cn-north-1", "20250312T084501Z",
     (STS_AK, STS_SK, STS_TOKEN)),
]

for host, key_id, region, x_date, (ak, sk, token) in CASES:
    SignerV4.get_current_format_date = staticmethod(lambda x_date=x_date: x_date)
    request = Request()
    request.set_method("GET")
    request.set_host(host)
    request.set_path("/")
    request.set_headers({"Host": host, "User-Agent": "volc-sdk-python/v1.0.229"})
    request.set_query(dict([*PARAMS, ("KeyID", key_id)]))
    SignerV4.sign(request, Credentials(ak, sk, "live", region, session_token=token))
    print(host, key_id, region, x_date, "token" if token else "-")
    for name in ("X-Date", "X-Content-Sha256", "X-Security-Token", "Authorization"):
        if name in request.headers:
            print(f"  {name}: {request.headers[name]}")


class Capture(requests.adapters.BaseAdapter):
    """Keeps the request the SDK would send and answers it with an empty result."""

    def send(self, request, **kwargs):
        self.sent = request
        response = requests.Response()
        response.status_code, response._content, response.request = 200, b'{"Result": {}}', request
        return response

    def close(self):
        pass


host, key_id, region, x_date, (ak, sk, token) = CASES[-1]
SignerV4.get_current_format_date = staticmethod(lambda: x_date)
service = LiveService(ak=ak, sk=sk)
service.set_session_token(token)
capture = Capture()
service.session.mount("https://", capture)
service.get_hls_encrypt_data_key({"KeyID": key_id})
print("LiveService.set_session_token sent", capture.sent.url)
for name in ("Host", "X-Date", "X-Content-Sha256", "X-Security-Token", "Authorization"):
    print(f"  {name}: {capture.sent.headers.get(name)}")
assert capture.sent.headers["Authorization"] == request.headers["Authorization"], "the two ways disagree"
