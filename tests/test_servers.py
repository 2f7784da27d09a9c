"""Servers as they are in the wild: redirects, and servers that want a header, a User-Agent, a
cookie, a proxy, a private CA or a signed query string. Every stream is compared by sha256."""

from __future__ import annotations

import json
import shutil
import socket
from email.message import Message
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import FIXTURES, sha256
from fake_volc import AK, SK, FakeLiveApi
from servers import ForwardProxy, Request, StaticServer
from tls import PEM, TlsStaticServer

from hlsdecrypt.cli import main
from hlsdecrypt.fetch import Fetcher
from hlsdecrypt.http import request_options
from hlsdecrypt.playlist import resolve

IMPLICIT = "implicit_iv/index.m3u8"
IMPLICIT_CLEAR = sha256(FIXTURES / "implicit_iv/clear.ts")
PARTS = 1 + 1 + 6  # a playlist, its key, six segments
LIVE_KEYS = json.loads((FIXTURES / "live_rotation/keys.json").read_text())


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch, tmp_path):
    """No proxy, CA bundle or credentials from the machine: each test sets what it means to test."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                 "VOLC_ACCESSKEY", "VOLC_SECRETKEY", "VOLCENGINE_ACCESS_KEY", "VOLCENGINE_SECRET_KEY",
                 "VOLCENGINE_SESSION_TOKEN", "HLSDECRYPT_API_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir(exist_ok=True)
    return folder


def _closed_port_url() -> str:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# -- 1. redirects: relative URIs resolve against the URL reached -----------------------------

def test_a_redirected_playlist_resolves_its_segments_and_key_against_the_url_reached(run, fixtures, tmp_path):
    out = tmp_path / "out.ts"
    with StaticServer(fixtures) as cdn, StaticServer(_empty(tmp_path)) as origin:
        origin.redirects["/live/index.m3u8"] = (301, "/moved/index.m3u8")  # two hops, the second to another host
        origin.redirects["/moved/index.m3u8"] = f"{cdn.url}/{IMPLICIT}"
        code, err = run("decrypt", f"{origin.url}/live/index.m3u8", "-o", out, "-v")
        verified, _ = run("verify", f"{origin.url}/live/index.m3u8")
    assert code == 0, err
    assert sha256(out) == IMPLICIT_CLEAR
    assert verified == 0
    assert f"redirected to {cdn.url}/{IMPLICIT}" in err
    assert {r.path for r in origin.requests} == {"/live/index.m3u8", "/moved/index.m3u8"}  # no segment asked there
    assert cdn.hits["/implicit_iv/key.bin"] == 2 and all(cdn.hits[f"/implicit_iv/seg{n}.ts"] == 2 for n in range(6))


def test_headers_go_to_every_host_named_but_a_redirect_elsewhere_drops_authorization(run, fixtures, tmp_path):
    out = tmp_path / "out.ts"
    with StaticServer(fixtures) as cdn, StaticServer(_empty(tmp_path)) as origin:
        origin.redirects["/live/index.m3u8"] = f"{cdn.url}/{IMPLICIT}"
        code, err = run("decrypt", f"{origin.url}/live/index.m3u8", "-o", out, "--header", "Authorization: Bearer t1",
                        "--header", "Referer: https://player.example/")
    assert code == 0, err
    assert sha256(out) == IMPLICIT_CLEAR
    assert origin.requests[0].headers.get("Authorization") == "Bearer t1"
    redirected, *named = cdn.requests
    assert redirected.path == f"/{IMPLICIT}" and "Authorization" not in redirected.headers  # as curl and requests do
    assert len(named) == PARTS - 1
    assert all(r.headers.get("Authorization") == "Bearer t1" for r in named)  # what the playlist names gets all
    assert all(r.headers.get("Referer") == "https://player.example/" for r in cdn.requests)


def test_a_redirected_master_and_variant_resolve_against_the_urls_reached(run, fixtures, tmp_path):
    shutil.copytree(fixtures / "master/high", fixtures / "mirror/high")
    out = tmp_path / "out.ts"
    with StaticServer(fixtures) as cdn, StaticServer(_empty(tmp_path)) as origin:
        origin.redirects["/tv/master.m3u8"] = f"{cdn.url}/master/index.m3u8"
        cdn.redirects["/master/high/index.m3u8"] = (307, "/mirror/high/index.m3u8")
        code, err = run("decrypt", f"{origin.url}/tv/master.m3u8", "-o", out)
    assert code == 0, err
    assert sha256(out) == sha256(FIXTURES / "master/clear_high.ts")
    assert cdn.hits["/mirror/high/key.bin"] == 1 and all(cdn.hits[f"/mirror/high/seg{n}.ts"] == 1 for n in range(3))
    assert not any(cdn.hits[f"/master/high/seg{n}.ts"] for n in range(3))


def test_a_redirected_key_is_followed(run, fixtures, served, tmp_path):
    playlist = fixtures / IMPLICIT
    playlist.write_text(playlist.read_text().replace('URI="key.bin"', 'URI="/kms/key?id=7"'))
    served.redirects["/kms/key"] = "../implicit_iv/key.bin"  # relative to where it was asked
    out = tmp_path / "out.ts"
    code, err = run("decrypt", f"{served.url}/{IMPLICIT}", "-o", out)
    assert code == 0, err
    assert sha256(out) == IMPLICIT_CLEAR
    assert served.hits["/kms/key"] == 1 and served.hits["/implicit_iv/key.bin"] == 1


@pytest.mark.parametrize("what, path, exit_code", [
    ("playlist", "/implicit_iv/index.m3u8", 3),
    ("key", "/implicit_iv/key.bin", 4),
    ("segment", "/implicit_iv/seg2.ts", 5),
])
@pytest.mark.parametrize("target", ["file:///etc/passwd", "data:text/plain,not-a-key-at-all"])
def test_a_redirect_to_another_scheme_is_refused(run, served, tmp_path, what, path, exit_code, target):
    served.redirects[path] = target
    out = tmp_path / "out.ts"
    code, err = run("decrypt", f"{served.url}/{IMPLICIT}", "-o", out)
    assert code == exit_code
    assert "redirected to a URL that is not http(s): refused" in err.strip().splitlines()[-1]
    assert "root:" not in err and not out.exists()


# -- 9. request options: header, User-Agent, cookies, CA bundle, proxy ------------------------

def test_a_key_server_that_wants_a_referer_and_a_token_gets_them(run, served, tmp_path):
    token = "Bearer tok-3f9a1c77"
    served.gate = lambda r: 403 if r.path.endswith("key.bin") and (
        r.headers.get("Referer") != "https://player.example/" or r.headers.get("Authorization") != token) else None
    url = f"{served.url}/{IMPLICIT}"
    code, err = run("decrypt", url, "-o", tmp_path / "refused.ts")
    assert code == 4 and "HTTP 403" in err
    asked = len(served.requests)
    out = tmp_path / "out.ts"
    code, err = run("decrypt", url, "-o", out, "-v", "--header", "Referer: https://player.example/",
                    "--header", f"Authorization: {token}")
    assert code == 0, err
    assert sha256(out) == IMPLICIT_CLEAR
    assert "Referer, Authorization" in err and "tok-3f9a1c77" not in err  # named under -v, never shown
    requests = served.requests[asked:]
    assert len(requests) == PARTS
    assert all(r.headers.get("Authorization") == token for r in requests)  # every request, not only the key's


def test_a_server_that_wants_a_browser_user_agent_gets_it(run, served, tmp_path):
    browser = "Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0"
    served.gate = lambda r: None if r.headers.get("User-Agent") == browser else 403
    code, err = run("decrypt", f"{served.url}/{IMPLICIT}", "-o", tmp_path / "refused.ts")
    assert code == 3 and "HTTP 403" in err
    assert served.requests[0].headers.get("User-Agent") == "hlsdecrypt"
    out = tmp_path / "out.ts"
    code, err = run("decrypt", f"{served.url}/{IMPLICIT}", "-o", out, "--user-agent", browser)
    assert code == 0, err
    assert sha256(out) == IMPLICIT_CLEAR


COOKIES_TXT = (
    "# Netscape HTTP Cookie File\n"
    "# https://curl.se/docs/http-cookies.html\n"
    "\n"
    "127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tsess-7d1e40\n"  # expiry 0: a session cookie, as exporters write it
    "#HttpOnly_127.0.0.1\tFALSE\t/implicit_iv\tFALSE\t4102444800\tauth\tauth-91b2c5\n"
    "127.0.0.1\tFALSE\t/\tFALSE\t1000000000\tstale\tgone-since-2001\n"
    ".example.com\tTRUE\t/\tFALSE\t4102444800\tother\tnot-for-this-host\n"
)


def _cookies_of(request: Request) -> dict[str, str]:
    jar = SimpleCookie()
    jar.load(request.headers.get("Cookie", ""))
    return {name: morsel.value for name, morsel in jar.items()}


def test_a_server_that_wants_cookies_gets_those_of_a_cookies_txt(run, served, tmp_path):
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(COOKIES_TXT)
    wanted = {"session": "sess-7d1e40", "auth": "auth-91b2c5"}  # not the expired one, not another domain's
    served.gate = lambda r: None if _cookies_of(r) == wanted else 403
    out = tmp_path / "out.ts"
    code, err = run("decrypt", f"{served.url}/{IMPLICIT}", "-o", out, "--cookies", cookies, "-v")
    assert code == 0, err
    assert sha256(out) == IMPLICIT_CLEAR
    assert len(served.requests) == PARTS
    assert "1 of 4 cookies have expired" in err
    assert not any(value in err for value in ("sess-7d1e40", "auth-91b2c5", "gone-since-2001"))


@pytest.mark.parametrize("text, says", [
    (None, "No such file"),
    ('[{"domain": "127.0.0.1", "name": "session", "value": "sess-secret"}]', "not a Netscape cookies.txt"),
    ("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\tsession\tsess-secret\n", "line 2: want 7"),
    ("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\tsoon\tsession\tsess-secret\n", "line 2: the expiry"),
    ("# Netscape HTTP Cookie File\n# nothing exported\n", "no cookies"),
])
def test_a_bad_cookies_file_is_a_one_line_usage_error_naming_it(run, served, tmp_path, text, says):
    cookies = tmp_path / "cookies.txt"
    if text is not None:
        cookies.write_text(text)
    code, err = run("decrypt", f"{served.url}/{IMPLICIT}", "-o", tmp_path / "out.ts", "--cookies", cookies)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert f"--cookies {cookies}" in err and says in err and "sess-secret" not in err
    assert not served.requests


@pytest.mark.parametrize("headers, says", [
    (["Authorization Bearer sekrit-5e2f"], "--header #1: want 'Name: value'"),
    (["Referer: https://a.example/", "Bearer sekrit-5e2f: x"], "--header #2: want 'Name: value'"),
    (["Range: bytes=0-99"], "sets Range itself"),
    (["X-Token: a", "x-token: sekrit-5e2f"], "--header x-token: given twice"),
    (["X-Token: sekrit-5e2f\r\nX-Evil: 1"], "line break"),
])
def test_a_bad_header_is_a_usage_error_that_does_not_repeat_it(run, served, tmp_path, headers, says):
    argv = [a for h in headers for a in ("--header", h)]
    code, err = run("decrypt", f"{served.url}/{IMPLICIT}", "-o", tmp_path / "out.ts", *argv)
    assert code == 2
    assert says in err and "sekrit" not in err
    assert not served.requests


@pytest.mark.parametrize("how", ["--ca-bundle", "REQUESTS_CA_BUNDLE"])
def test_a_private_ca_is_trusted_with_ca_bundle_or_the_environment(run, tmp_path, monkeypatch, how):
    import certifi

    argv: list[str] = []
    if how == "--ca-bundle":
        argv = ["--ca-bundle", str(PEM)]
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # the option wins over the environment
    else:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(PEM))
    out = tmp_path / "out.ts"
    with TlsStaticServer(FIXTURES) as server:
        code, err = run("decrypt", f"{server.url}/{IMPLICIT}", "-o", out, *argv)
        assert server.handshakes >= 1
    assert code == 0, err
    assert sha256(out) == IMPLICIT_CLEAR


@pytest.mark.parametrize("bundle, says", [("README.md", "no PEM certificate"), ("missing.pem", "no such file")])
def test_a_ca_bundle_that_is_not_one_is_a_usage_error(run, tmp_path, bundle, says):
    path = Path(__file__).resolve().parent.parent / bundle
    code, err = run("decrypt", FIXTURES / IMPLICIT, "-o", tmp_path / "out.ts", "--ca-bundle", path)
    assert code == 2
    assert f"--ca-bundle {path}: {says}" in err


def test_requests_go_through_the_proxy_given_rather_than_the_environments(run, served, tmp_path, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", _closed_port_url())  # would refuse every connection
    out = tmp_path / "out.ts"
    with ForwardProxy() as proxy:
        code, err = run("decrypt", f"{served.url}/{IMPLICIT}", "-o", out, "--proxy", proxy.url)
    assert code == 0, err
    assert sha256(out) == IMPLICIT_CLEAR
    assert len(proxy.urls) == PARTS
    assert sorted(urlsplit(u).path for u in proxy.urls) == sorted(r.path for r in served.requests)


def test_environment_proxies_still_apply_without_proxy(run, served, tmp_path, monkeypatch):
    out = tmp_path / "out.ts"
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        code, err = run("decrypt", f"{served.url}/{IMPLICIT}", "-o", out)
    assert code == 0, err
    assert sha256(out) == IMPLICIT_CLEAR
    assert len(proxy.urls) == PARTS


@pytest.mark.parametrize("proxy, says", [
    ("ftp://127.0.0.1:21", "want a URL such as http://HOST:PORT"),
    ("http://user:pr0xy-pass@127.0.0.1:port", "--proxy http://***@127.0.0.1:port: not a URL"),
])
def test_a_bad_proxy_is_a_usage_error_that_hides_its_password(run, tmp_path, proxy, says):
    code, err = run("decrypt", FIXTURES / IMPLICIT, "-o", tmp_path / "out.ts", "--proxy", proxy)
    assert code == 2
    assert says in err and "pr0xy-pass" not in err


class RecordingApi(FakeLiveApi):
    """The fake key API, keeping the headers of every request it gets."""

    def __init__(self, *args, **kwargs):
        self.headers_seen: list[Message] = []
        super().__init__(*args, **kwargs)

    def _handler(self):
        api, base = self, super()._handler()

        class Handler(base):
            def do_GET(self) -> None:
                api.headers_seen.append(self.headers)
                super().do_GET()

        return Handler


def test_the_signed_api_requests_carry_none_of_the_request_options(run, served, tmp_path, monkeypatch):
    monkeypatch.setenv("VOLC_ACCESSKEY", AK)
    monkeypatch.setenv("VOLC_SECRETKEY", SK)
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tsess-7d1e40\n")
    served.gate = lambda r: None if r.headers.get("X-Token") == "tok-a1" and _cookies_of(r) else 403
    out = tmp_path / "out.ts"
    with RecordingApi(LIVE_KEYS, rate=20) as api, ForwardProxy() as proxy:
        code, err = run("decrypt", f"{served.url}/live_rotation/index.m3u8", "-o", out, "--key-source", "api",
                        "--api-endpoint", api.url, "--api-rate", "20", "--header", "X-Token: tok-a1",
                        "--user-agent", "Browser/1.0", "--cookies", cookies, "--proxy", proxy.url)
    assert code == 0, err
    assert sha256(out) == sha256(FIXTURES / "live_rotation/clear.ts")
    assert len(api.headers_seen) == len(LIVE_KEYS)
    for headers in api.headers_seen:
        assert "X-Token" not in headers and "Cookie" not in headers and headers["User-Agent"] != "Browser/1.0"
    assert len(proxy.urls) == 1 + 6 and all(u.startswith(served.url) for u in proxy.urls)


def test_secrets_in_request_options_stay_out_of_reprs(tmp_path):
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(COOKIES_TXT)
    options = request_options(headers=["Authorization: Bearer tok-3f9a1c77"], cookies=str(cookies),
                              proxy="http://user:pr0xy-pass@127.0.0.1:3128")
    shown = repr(Fetcher(request_options=options))
    assert "Authorization" in shown and "3 cookies" in shown
    assert not any(s in shown for s in ("tok-3f9a1c77", "sess-7d1e40", "auth-91b2c5", "pr0xy-pass"))


def test_the_request_options_are_in_help(capsys):
    for command in ("decrypt", "verify", "keys"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        shown = capsys.readouterr().out
        for option in ("--header", "--user-agent", "--cookies", "--proxy", "--ca-bundle", "--append-url-params"):
            assert option in shown, (command, option)


# -- 10. a signed playlist URL's query string, carried over -----------------------------------

SIGNED = "auth_key=1700000000-0-0-5f2b9c0e&expires=1700003600"


@pytest.mark.parametrize("playlist, clear, refused", [
    (IMPLICIT, "implicit_iv/clear.ts", {4, 5}),  # the key or a segment, whichever fails first
    ("master/index.m3u8", "master/clear_high.ts", {3}),  # the variant playlist
    ("fmp4/index.m3u8", "fmp4/clear.mp4", {4, 5}),  # an init section too
])
def test_append_url_params_signs_every_request_a_signed_playlist_leads_to(run, served, tmp_path, playlist, clear,
                                                                          refused):
    served.gate = lambda r: None if r.query == SIGNED else 403
    url = f"{served.url}/{playlist}?{SIGNED}"
    code, err = run("decrypt", url, "-o", tmp_path / "refused.bin")
    assert code in refused and "HTTP 403" in err
    asked = len(served.requests)
    out = tmp_path / "out.bin"
    code, err = run("decrypt", url, "-o", out, "--append-url-params")
    assert code == 0, err
    assert sha256(out) == sha256(FIXTURES / clear)
    assert len(served.requests) - asked >= 4


def test_append_url_params_leaves_other_hosts_and_uris_with_a_query_alone(run, fixtures, served, tmp_path):
    with StaticServer(fixtures) as other:
        lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:1", "#EXT-X-MEDIA-SEQUENCE:7",
                 f'#EXT-X-KEY:METHOD=AES-128,URI="{other.url}/implicit_iv/key.bin"']
        for n, uri in enumerate(["seg0.ts", "seg1.ts?part=1", f"{other.url}/implicit_iv/seg2.ts", "seg3.ts",
                                 "/implicit_iv/seg4.ts", "seg5.ts"]):
            lines += ["#EXTINF:1.0,", uri]
        (fixtures / "implicit_iv/carry.m3u8").write_text("\n".join(lines + ["#EXT-X-ENDLIST", ""]))
        out = tmp_path / "out.ts"
        code, err = run("decrypt", f"{served.url}/implicit_iv/carry.m3u8?{SIGNED}", "-o", out, "--append-url-params")
    assert code == 0, err
    assert sha256(out) == IMPLICIT_CLEAR
    assert sorted((r.path, r.query) for r in other.requests) == [("/implicit_iv/key.bin", ""),
                                                                  ("/implicit_iv/seg2.ts", "")]
    assert {r.path: r.query for r in served.requests} == {
        "/implicit_iv/carry.m3u8": SIGNED, "/implicit_iv/seg0.ts": SIGNED, "/implicit_iv/seg1.ts": "part=1",
        "/implicit_iv/seg3.ts": SIGNED, "/implicit_iv/seg4.ts": SIGNED, "/implicit_iv/seg5.ts": SIGNED}


@pytest.mark.parametrize("base, ref, expected", [
    ("https://a.example/r/i.m3u8?t=1", "s.ts", "https://a.example/r/s.ts?t=1"),
    ("https://a.example/r/i.m3u8?t=1", "../k.bin", "https://a.example/k.bin?t=1"),
    ("https://a.example/r/i.m3u8?t=1", "s.ts#x", "https://a.example/r/s.ts?t=1#x"),
    ("https://a.example/r/i.m3u8?t=1", "s.ts?own=2", "https://a.example/r/s.ts?own=2"),
    ("https://a.example/r/i.m3u8?t=1", "//b.example/s.ts", "https://b.example/s.ts"),
    ("https://a.example/r/i.m3u8?t=1", "https://b.example/s.ts", "https://b.example/s.ts"),
    ("https://a.example/r/i.m3u8?t=1", "http://a.example/r/s.ts", "http://a.example/r/s.ts"),  # never downgraded
    ("https://a.example/r/i.m3u8", "s.ts", "https://a.example/r/s.ts"),
    ("/rec/i.m3u8", "s.ts", "/rec/s.ts"),
])
def test_the_query_is_carried_only_to_the_same_scheme_and_host(base, ref, expected):
    assert resolve(base, ref, carry_query=True) == expected
    assert resolve(base, ref) == (expected if "?t=1" not in expected else expected.replace("?t=1", ""))
