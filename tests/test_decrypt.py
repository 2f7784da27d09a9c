"""End to end: every fixture decrypts to the sha256 of its clear reference, locally and over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, MANIFEST, sha256
from servers import StaticServer

from hlsdecrypt import Fetcher, decrypt, key_chain


def _id(entry: dict) -> str:
    return entry["clear"].replace("/", ":")


def _args(entry: dict, root: Path) -> list[str]:
    """The manifest's extra arguments, with fixture-relative paths made absolute."""
    return [str(root / a) if a.endswith(".json") else a for a in entry["args"]]


@pytest.mark.parametrize("entry", MANIFEST, ids=_id)
def test_fixture_decrypts_byte_identical(entry, run, tmp_path):
    out = tmp_path / "out.bin"
    code, err = run("decrypt", FIXTURES / entry["playlist"], "-o", out, *_args(entry, FIXTURES))
    assert code == 0, err
    assert sha256(out) == entry["sha256"]


@pytest.mark.parametrize("entry", MANIFEST, ids=_id)
def test_fixture_decrypts_byte_identical_over_http(entry, run, served, fixtures, tmp_path):
    out = tmp_path / "out.bin"
    code, err = run("decrypt", f"{served.url}/{entry['playlist']}", "-o", out, *_args(entry, fixtures))
    assert code == 0, err
    assert sha256(out) == entry["sha256"]


def test_byte_ranges_are_cut_from_a_server_that_ignores_range(run, fixtures, tmp_path):
    out = tmp_path / "out.ts"
    with StaticServer(fixtures, ignore_range=True) as server:
        code, err = run("decrypt", f"{server.url}/byterange/index.m3u8", "-o", out)
    assert code == 0, err
    assert sha256(out) == sha256(FIXTURES / "byterange/clear.ts")


def test_each_distinct_key_is_fetched_once(run, served, tmp_path):
    # six EXT-X-KEY tags (one IV each) name the same key URI
    code, err = run("decrypt", f"{served.url}/byterange/index.m3u8", "-o", tmp_path / "out.ts")
    assert code == 0, err
    assert served.hits["/byterange/key.bin"] == 1
    assert served.hits["/byterange/stream.ts"] == 6


def test_master_variant_by_index(run, tmp_path):
    out = tmp_path / "low.ts"
    code, err = run("decrypt", FIXTURES / "master/index.m3u8", "--variant", "0", "-o", out)
    assert code == 0, err
    assert "variant 0 of 2: BANDWIDTH=90000" in err
    assert sha256(out) == sha256(FIXTURES / "master/clear_low.ts")


def test_output_to_stdout(capsysbinary):
    from hlsdecrypt.cli import main

    assert main(["decrypt", str(FIXTURES / "implicit_iv/index.m3u8"), "-o", "-", "-q"]) == 0
    out = capsysbinary.readouterr().out
    assert out == (FIXTURES / "implicit_iv/clear.ts").read_bytes()


def test_python_api_reports_what_it_wrote(tmp_path):
    fetcher = Fetcher()
    keys = key_chain(source="uri", fetcher=fetcher)
    result = decrypt(str(FIXTURES / "fmp4/index.m3u8"), str(tmp_path / "out.mp4"), keys=keys, fetcher=fetcher)
    keys.close()
    assert (result.segments, len(result.playlist.parts)) == (3, 4)  # three segments and the init section
    assert result.bytes_written == (FIXTURES / "fmp4/clear.mp4").stat().st_size
    assert sha256(tmp_path / "out.mp4") == sha256(FIXTURES / "fmp4/clear.mp4")


def test_live_playlist_without_endlist_decrypts_what_is_listed(run, fixtures, tmp_path):
    playlist = fixtures / "implicit_iv/index.m3u8"
    playlist.write_text(playlist.read_text().replace("#EXT-X-ENDLIST\n", ""))
    code, err = run("decrypt", playlist, "-o", tmp_path / "out.ts")
    assert code == 0
    assert "no EXT-X-ENDLIST" in err and "6 segments" in err
    assert sha256(tmp_path / "out.ts") == sha256(FIXTURES / "implicit_iv/clear.ts")


def test_console_script_and_module_entry_points(tmp_path):
    for cmd in (["hlsdecrypt"], [sys.executable, "-m", "hlsdecrypt"]):
        out = tmp_path / "out.ts"
        done = subprocess.run([*cmd, "decrypt", str(FIXTURES / "explicit_iv/index.m3u8"), "-o", str(out)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "error"})
        assert done.returncode == 0, done.stderr
        assert sha256(out) == sha256(FIXTURES / "explicit_iv/clear.ts")
        out.unlink()
