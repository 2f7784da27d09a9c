"""Faults while fetching, resume after a kill, batches, hostile input, and what may never leak."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from conftest import FIXTURES, MANIFEST, sha256
from servers import StaticServer

from hlsdecrypt.errors import HlsDecryptError
from hlsdecrypt.playlist import parse

IMPLICIT = "implicit_iv/index.m3u8"


@pytest.fixture
def outdir(tmp_path: Path) -> Path:
    """An empty folder for outputs, to see that a failed run leaves nothing there."""
    path = tmp_path / "out"
    path.mkdir()
    return path
CLEAR_REF = FIXTURES / "implicit_iv/clear.ts"


@pytest.mark.parametrize("fault", [500, 502, 503, 504, 429, "drop", "truncate", "slow"])
def test_transient_segment_faults_are_retried(run, fixtures, tmp_path, fault):
    with StaticServer(fixtures, quiet=True) as server:
        server.slow_seconds = 2.0
        server.faults["/implicit_iv/seg2.ts"] = [fault]
        code, err = run("decrypt", f"{server.url}/{IMPLICIT}", "-o", tmp_path / "out.ts", "--timeout", "1", "-v")
    assert code == 0, err
    assert server.hits["/implicit_iv/seg2.ts"] == 2
    assert sha256(tmp_path / "out.ts") == sha256(CLEAR_REF)
    assert "retrying" in err


def test_key_fetch_faults_are_retried(run, fixtures, tmp_path):
    with StaticServer(fixtures, quiet=True) as server:
        server.faults["/implicit_iv/key.bin"] = [503, "drop"]
        code, err = run("decrypt", f"{server.url}/{IMPLICIT}", "-o", tmp_path / "out.ts")
    assert code == 0, err
    assert server.hits["/implicit_iv/key.bin"] == 3
    assert sha256(tmp_path / "out.ts") == sha256(CLEAR_REF)


@pytest.mark.parametrize("status", [403, 404, 410])
def test_client_errors_are_not_retried(run, fixtures, outdir, status):
    with StaticServer(fixtures, quiet=True) as server:
        server.faults["/implicit_iv/seg2.ts"] = [status]
        code, err = run("decrypt", f"{server.url}/{IMPLICIT}", "-o", outdir / "out.ts")
    assert code == 5
    assert server.hits["/implicit_iv/seg2.ts"] == 1
    assert f"segment 9 (line 11): {server.url}/implicit_iv/seg2.ts: HTTP {status}" in err
    assert list(outdir.iterdir()) == []


def test_a_segment_that_keeps_failing_stops_the_run_after_the_retries(run, fixtures, outdir):
    with StaticServer(fixtures, quiet=True) as server:
        server.faults["/implicit_iv/seg2.ts"] = [500] * 10
        code, err = run("decrypt", f"{server.url}/{IMPLICIT}", "-o", outdir / "out.ts", "--retries", "2")
    assert code == 5
    assert server.hits["/implicit_iv/seg2.ts"] == 3
    assert "segment 9 (line 11)" in err and "HTTP 500 (gave up after 3 attempts)" in err
    assert list(outdir.iterdir()) == []


def test_a_playlist_that_is_missing_over_http(run, served, tmp_path):
    code, err = run("decrypt", f"{served.url}/nowhere/index.m3u8", "-o", tmp_path / "out.ts")
    assert code == 3 and "nowhere/index.m3u8: HTTP 404" in err


def test_skip_missing_writes_the_rest_and_lists_the_gaps(run, fixtures, tmp_path):
    (fixtures / "implicit_iv/seg1.ts").unlink()
    (fixtures / "implicit_iv/seg4.ts").unlink()
    code, err = run("decrypt", fixtures / IMPLICIT, "-o", tmp_path / "out.ts", "--skip-missing")
    assert code == 5
    assert "2 of 6 segments are missing" in err
    assert "segment 8 (line 9)" in err and "segment 11 (line 15)" in err
    clear = [(FIXTURES / f"clear/seg{i}.ts").read_bytes() for i in (0, 2, 3, 5)]
    assert (tmp_path / "out.ts").read_bytes() == b"".join(clear)


def _slow_run(url: str, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hlsdecrypt", "decrypt", url, "-o", str(out), "--jobs", "1",
                             "--resume", *extra], stderr=subprocess.PIPE, text=True)


def _journal(out: Path) -> Path:
    return out.parent / f".{out.name}.part.json"


def _parts_journaled(out: Path) -> int:
    try:
        return json.loads(_journal(out).read_text())["parts"]
    except (OSError, ValueError):
        return 0


def test_resume_after_a_kill_is_byte_identical_and_skips_what_was_written(fixtures, outdir):
    out = outdir / "out.ts"
    with StaticServer(fixtures, quiet=True) as server:
        server.delay = 0.3
        proc = _slow_run(f"{server.url}/{IMPLICIT}", out)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _parts_journaled(out) < 3:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert not out.exists() and _journal(out).exists()
        hits_before = dict(server.hits)
        server.delay = 0
        done = subprocess.run([sys.executable, "-m", "hlsdecrypt", "decrypt", f"{server.url}/{IMPLICIT}",
                               "-o", str(out), "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming after" in done.stderr
    assert sha256(out) == sha256(CLEAR_REF)
    assert server.hits["/implicit_iv/seg0.ts"] == hits_before["/implicit_iv/seg0.ts"] == 1  # not fetched again
    assert sorted(p.name for p in outdir.iterdir()) == ["out.ts"]  # journal and partial file are gone


def test_resume_starts_over_when_the_playlist_changed(run, fixtures, tmp_path):
    out = tmp_path / "out.ts"
    (fixtures / "implicit_iv/seg3.ts").rename(fixtures / "implicit_iv/held.ts")
    code, _ = run("decrypt", fixtures / IMPLICIT, "-o", out, "--resume")
    assert code == 5 and _journal(out).exists()
    (fixtures / "implicit_iv/held.ts").rename(fixtures / "implicit_iv/seg3.ts")
    playlist = fixtures / IMPLICIT
    playlist.write_text(playlist.read_text().replace("#EXT-X-MEDIA-SEQUENCE:7", "#EXT-X-MEDIA-SEQUENCE:8"))
    code, err = run("decrypt", playlist, "-o", out, "--resume", "--no-media-check", "--key", "00" * 16)
    assert code == 5 and "resuming" not in err  # a new plan: started from the first part (and failed on it)


def test_resume_starts_over_when_the_keys_changed(run, fixtures, tmp_path):
    out = tmp_path / "out.ts"
    (fixtures / "implicit_iv/seg3.ts").rename(fixtures / "implicit_iv/held.ts")
    assert run("decrypt", fixtures / IMPLICIT, "-o", out, "--resume")[0] == 5
    (fixtures / "implicit_iv/held.ts").rename(fixtures / "implicit_iv/seg3.ts")
    (fixtures / "implicit_iv/key.bin").write_bytes(bytes(16))
    code, err = run("decrypt", fixtures / IMPLICIT, "-o", out, "--resume")
    assert "keys differ" in err and code == 5


def test_resume_never_writes_through_a_planted_symlink(run, fixtures, tmp_path):
    out = tmp_path / "out.ts"
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / ".out.ts.part").symlink_to(victim)
    _journal(out).write_text('{"version": 1, "plan": "x", "parts": 0, "bytes": 0, "keys": {}}')
    code, err = run("decrypt", fixtures / IMPLICIT, "-o", out, "--resume")
    assert code == 0, err
    assert victim.read_bytes() == b"precious"
    assert sha256(out) == sha256(CLEAR_REF)


def test_batch_reports_each_stream_and_goes_on_after_a_failure(run, fixtures, tmp_path):
    (fixtures / "mixed/seg5.ts").unlink()
    batch = tmp_path / "batch.txt"
    batch.write_text(f"# source output\n{fixtures / IMPLICIT} {tmp_path / 'a.ts'}\n"
                     f"{fixtures / 'mixed/index.m3u8'} {tmp_path / 'b.ts'}\n"
                     f"{fixtures / 'fmp4/index.m3u8'} {tmp_path / 'c.mp4'}\n")
    code, err = run("decrypt", "--batch", batch)
    assert code == 5
    assert "[1/3] ok" in err and "[2/3] FAILED" in err and "segment 25 (line 20)" in err and "[3/3] ok" in err
    assert "2 of 3 streams decrypted" in err
    assert sha256(tmp_path / "a.ts") == sha256(CLEAR_REF)
    assert sha256(tmp_path / "c.mp4") == sha256(FIXTURES / "fmp4/clear.mp4")
    assert not (tmp_path / "b.ts").exists()


def test_several_sources_share_one_key_chain(run, served, tmp_path):
    # both variants of the master, named after their folders, in one run
    url = served.url
    code, err = run("decrypt", f"{url}/master/low/index.m3u8", f"{url}/master/high/index.m3u8", "-o", tmp_path)
    assert code == 0, err
    assert sha256(tmp_path / "low.ts") == sha256(FIXTURES / "master/clear_low.ts")
    assert sha256(tmp_path / "high.ts") == sha256(FIXTURES / "master/clear_high.ts")


def test_endless_master_nesting_is_refused(run, tmp_path):
    (tmp_path / "loop.m3u8").write_text("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nloop.m3u8\n")
    code, err = run("decrypt", tmp_path / "loop.m3u8", "-o", tmp_path / "out.ts")
    assert code == 3 and "nested more than 3 deep" in err


def test_huge_byte_range_is_bad_input(run, fixtures, tmp_path):
    playlist = fixtures / "byterange/index.m3u8"
    playlist.write_text(playlist.read_text().replace("#EXT-X-BYTERANGE:14480@16", "#EXT-X-BYTERANGE:999999999999@16"))
    code, err = run("decrypt", playlist, "-o", tmp_path / "out.ts")
    assert code == 3 and "line 8: BYTERANGE length 999999999999 is larger than any segment" in err


def test_a_local_playlist_cannot_name_an_absolute_path(run, fixtures, tmp_path):
    playlist = fixtures / IMPLICIT
    playlist.write_text(playlist.read_text().replace("seg0.ts", "/etc/hostname"))
    code, err = run("decrypt", playlist, "-o", tmp_path / "out.ts")
    assert code == 3 and "outside the playlist's folder" in err
    code, err = run("decrypt", playlist, "-o", tmp_path / "out.ts", "--allow-any-path")
    assert code == 5 and "segment 7 (line 7)" in err  # read, and refused as media


_TAGS = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXT-X-MEDIA-SEQUENCE:", "#EXTINF:",
         "#EXT-X-KEY:METHOD=AES-128,URI=\"k\"", "#EXT-X-KEY:METHOD=", "#EXT-X-KEY:METHOD=AES-128,URI=\"k\",IV=0x",
         "#EXT-X-BYTERANGE:", "#EXT-X-MAP:URI=\"i\"", "#EXT-X-MAP:URI=\"i\",BYTERANGE=\"", "#EXT-X-DISCONTINUITY",
         "#EXT-X-STREAM-INF:BANDWIDTH=", "#EXT-X-ENDLIST", "seg.ts", "", "#EXT-X-PROGRAM-DATE-TIME:"]
_fixture_texts = [(FIXTURES / e["playlist"]).read_text() for e in MANIFEST]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.text(max_size=300),
    st.lists(st.tuples(st.sampled_from(_TAGS), st.text(alphabet="0123456789abcdefx@,.-=\"[]:/?#%", max_size=12))
             .map("".join), max_size=25).map(lambda lines: "#EXTM3U\n" + "\n".join(lines)),
    st.tuples(st.sampled_from(_fixture_texts), st.integers(0, 2000), st.integers(0, 40), st.text(max_size=8))
    .map(lambda t: t[0][:t[1]] + t[3] + t[0][t[1] + t[2]:]),
))
@example("#EXTM3U\n#EXTINF:1,\nhttp://[x/seg.ts\n")  # urllib's ValueError for a malformed IPv6 host
def test_parser_raises_only_its_own_errors(text):
    try:
        parse(text, "/streams/index.m3u8")
    except HlsDecryptError:
        pass


def test_no_key_reaches_the_journal_or_a_verify_report(run, fixtures, tmp_path):
    keys = {name: bytes.fromhex(hexkey) for name, hexkey in
            json.loads((FIXTURES / "live_rotation/keys.json").read_text()).items()}
    (fixtures / "live_rotation/HD_1080p_1715075942927_3070957834_107330.ts").unlink()
    out = tmp_path / "out.ts"
    code, err = run("decrypt", fixtures / "live_rotation/index.m3u8", "--keys", fixtures / "live_rotation/keys.json",
                    "-o", out, "--resume", "-v")
    assert code == 5
    report = tmp_path / "report.json"
    assert run("verify", FIXTURES / "live_rotation/index.m3u8", "--keys", FIXTURES / "live_rotation/keys.json",
               "--json", report, "--junit", tmp_path / "report.xml", "-v")[0] == 0
    left = [_journal(out).read_bytes(), report.read_bytes(), (tmp_path / "report.xml").read_bytes(), err.encode()]
    for key in keys.values():
        for form in (key, key.hex().encode(), key.hex().upper().encode(), base64.b64encode(key)):
            assert not any(form in blob for blob in left)


def test_skip_missing_also_skips_a_byte_range_file_that_is_gone(run, fixtures, tmp_path):
    (fixtures / "byterange/stream.ts").unlink()
    code, err = run("decrypt", fixtures / "byterange/index.m3u8", "-o", tmp_path / "out.ts", "--skip-missing")
    assert code == 5 and "6 of 6 segments are missing" in err
    assert (tmp_path / "out.ts").read_bytes() == b""
