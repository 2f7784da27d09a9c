"""Bad input: one clear line naming the line, segment or key; a distinct exit code; no output file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FIXTURES
from servers import StaticServer


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def fail(run, tmp_path):
    """Run decrypt expecting failure: returns the error line, after checking the exit code and
    that nothing (not even a temporary file) is left in the output folder."""

    def _fail(code: int, *argv) -> str:
        outdir = tmp_path / "outdir"
        outdir.mkdir(exist_ok=True)
        got, err = run("decrypt", *argv, "-o", outdir / "out.ts")
        assert got == code, err
        assert list(outdir.iterdir()) == []
        return _error_line(err)

    return _fail


def test_wrong_key_names_the_segment(fail):
    line = fail(5, FIXTURES / "implicit_iv/index.m3u8", "--key", "00" * 16)
    assert "segment 7 (line 7)" in line and "wrong key" in line


def test_wrong_iv_is_caught_although_the_padding_is_valid(fail, fixtures):
    # an IV off by one in its last byte garbles byte 15 only: the TS table CRC catches it
    playlist = fixtures / "explicit_iv/index.m3u8"
    _edit(playlist, "IV=0x8f1c3a5b7d9e0f2143658709badcfe10", "IV=0x8f1c3a5b7d9e0f2143658709badcfe11")
    line = fail(5, playlist)
    assert "segment 0 (line 7)" in line and "wrong IV" in line


def test_truncated_segment_names_the_segment(fail, fixtures):
    seg = fixtures / "implicit_iv/seg2.ts"
    seg.write_bytes(seg.read_bytes()[:-5])
    line = fail(5, fixtures / "implicit_iv/index.m3u8")
    assert "segment 9 (line 11)" in line and "not a positive multiple of 16" in line


def test_missing_segment_names_the_segment(fail, fixtures):
    (fixtures / "implicit_iv/seg3.ts").unlink()
    line = fail(5, fixtures / "implicit_iv/index.m3u8")
    assert "segment 10 (line 13)" in line and "seg3.ts" in line


def test_missing_segment_over_http_names_the_url(fail, fixtures, served):
    (fixtures / "implicit_iv/seg3.ts").unlink()
    line = fail(5, f"{served.url}/implicit_iv/index.m3u8")
    assert "segment 10 (line 13)" in line and "seg3.ts: HTTP 404" in line


@pytest.mark.parametrize("method", ["SAMPLE-AES", "SAMPLE-AES-CTR", "AES-256"])
def test_unsupported_methods_are_refused(fail, fixtures, method):
    playlist = fixtures / "implicit_iv/index.m3u8"
    _edit(playlist, "METHOD=AES-128", f"METHOD={method}")
    line = fail(3, playlist)
    assert f"line 5: METHOD={method} is not supported" in line


def test_bad_iv_names_its_line(fail, fixtures):
    playlist = fixtures / "explicit_iv/index.m3u8"
    _edit(playlist, "IV=0x8f1c", "IV=0xZZ1c")
    assert "line 5: bad IV" in fail(3, playlist)


@pytest.mark.parametrize("duration", ["nan", "inf", "-inf"])
def test_a_duration_that_is_no_time_names_its_line(fail, fixtures, duration):
    """Python reads these as floats, and no JSON report could carry them."""
    playlist = fixtures / "explicit_iv/index.m3u8"
    _edit(playlist, "#EXTINF:1.000000,\nseg1.ts", f"#EXT-X-BYTERANGE:16@0\n#EXTINF:{duration},\nseg1.ts")
    assert f"line 9: EXTINF duration {float(duration)} is not a time" in fail(3, playlist)  # not its first tag's


def test_byterange_without_offset_at_start_names_its_line(fail, fixtures):
    playlist = fixtures / "byterange/index.m3u8"
    _edit(playlist, "#EXT-X-BYTERANGE:14480@16", "#EXT-X-BYTERANGE:14480")
    assert "line 8: BYTERANGE '14480' has no offset" in fail(3, playlist)


@pytest.mark.parametrize("bad", ["-5@0", "5@-1", "0@16", "x@16", "14480@"])
def test_malformed_byterange_names_its_line(fail, fixtures, bad):
    playlist = fixtures / "byterange/index.m3u8"
    _edit(playlist, "#EXT-X-BYTERANGE:14480@16", f"#EXT-X-BYTERANGE:{bad}")
    assert f"line 8: bad BYTERANGE '{bad}'" in fail(3, playlist)


def test_byterange_past_the_end_of_the_file_is_a_segment_error(fail, fixtures):
    playlist = fixtures / "byterange/index.m3u8"
    _edit(playlist, "#EXT-X-BYTERANGE:14480@16", "#EXT-X-BYTERANGE:14480@999999")
    assert "segment 0 (line 8)" in fail(5, playlist)


@pytest.mark.parametrize("uri", ["http://[x/seg.ts", "//[::1/seg.ts"])
def test_malformed_segment_uri_names_its_line(fail, fixtures, uri):
    playlist = fixtures / "implicit_iv/index.m3u8"
    _edit(playlist, "seg1.ts", uri)
    assert f"line 9: bad URI '{uri}'" in fail(3, playlist)


def test_not_a_playlist(fail, fixtures):
    line = fail(3, fixtures / "implicit_iv/seg0.ts")
    assert "seg0.ts: not an M3U8 playlist" in line


def test_malformed_tag_names_its_line(fail, fixtures):
    playlist = fixtures / "implicit_iv/index.m3u8"
    _edit(playlist, "#EXTINF:1.000000,\nseg1.ts", "#EXTINF:one,\nseg1.ts")
    assert "line 8: cannot parse '#EXTINF:one,'" in fail(3, playlist)


def test_missing_playlist(fail, tmp_path):
    assert "no-such.m3u8" in fail(3, tmp_path / "no-such.m3u8")


def test_empty_playlist(fail, tmp_path):
    playlist = tmp_path / "empty.m3u8"
    playlist.write_text("#EXTM3U\n#EXT-X-ENDLIST\n")
    assert "lists no segments" in fail(3, playlist)


def test_unknown_variant(fail):
    assert "no variant '7'" in fail(3, FIXTURES / "master/index.m3u8", "--variant", "7")


def test_key_unavailable_names_the_key_id_and_its_segments(fail):
    line = fail(4, FIXTURES / "live_rotation/index.m3u8", "--key-source", "none")
    assert "KeyID 8fcd39af7ab3b6f44e97ad8e07 (line 6)" in line
    assert "needed by segments 107326-107327" in line


def test_key_uri_that_is_not_16_bytes(fail, fixtures):
    (fixtures / "mixed/b.key").write_bytes(b"0123456789abcdef0123456789abcdef")
    line = fail(4, fixtures / "mixed/index.m3u8")
    assert "key b.key (line 18)" in line and "has 32" in line and "needed by segment 25" in line


def test_bad_key_option_is_a_usage_error(fail):
    assert "--key wants 32 hex digits" in fail(2, FIXTURES / "implicit_iv/index.m3u8", "--key", "abc")


def test_bad_keys_file_is_a_usage_error(fail, tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text('{"k": "not hex"}')
    assert "'k' is not 32 hex digits" in fail(2, FIXTURES / "implicit_iv/index.m3u8", "--keys", keys)


def test_remote_playlist_cannot_read_local_files(fail, fixtures, served):
    playlist = fixtures / "implicit_iv/index.m3u8"
    _edit(playlist, "seg0.ts", f"file://{fixtures}/implicit_iv/seg0.ts")
    line = fail(3, f"{served.url}/implicit_iv/index.m3u8")
    assert "segment 7 (line 7)" in line and "only http(s)" in line


def test_local_playlist_cannot_leave_its_folder(fail, fixtures):
    playlist = fixtures / "implicit_iv/index.m3u8"
    _edit(playlist, "seg0.ts", "../explicit_iv/seg0.ts")
    assert "outside the playlist's folder" in fail(3, playlist)


def test_failed_run_keeps_an_existing_output_intact(run, fixtures, tmp_path):
    out = tmp_path / "out.ts"
    out.write_bytes(b"previous result")
    (fixtures / "implicit_iv/seg5.ts").unlink()
    code, _ = run("decrypt", fixtures / "implicit_iv/index.m3u8", "-o", out, "--force")
    assert code == 5
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_exits_130_and_leaves_no_file(fixtures, tmp_path, signum):
    out = tmp_path / "out.ts"
    with StaticServer(fixtures, quiet=True) as server:
        server.delay = 0.4
        proc = subprocess.Popen([sys.executable, "-m", "hlsdecrypt", "decrypt", f"{server.url}/implicit_iv/index.m3u8",
                                 "-o", str(out), "--jobs", "1"], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not list(tmp_path.glob(".out.ts.*.part")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(tmp_path.glob(".out.ts.*.part")), "the run never started writing"
        proc.send_signal(signum)
        assert proc.wait(timeout=10) == 130
    assert "interrupted" in proc.stderr.read()
    assert [p.name for p in tmp_path.iterdir()] == ["fixtures"]  # no output, no temporary file
