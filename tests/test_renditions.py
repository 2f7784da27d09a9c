"""Masters with renditions: decrypt writes the variant's audio too, verify checks every media playlist."""

from __future__ import annotations

import json

import pytest

from conftest import FIXTURES, sha256

REND = FIXTURES / "renditions"
ARGS = ("--keys", REND / "keys.json")


def test_the_audio_rendition_is_written_beside_the_video(run, tmp_path):
    code, err = run("decrypt", REND / "index.m3u8", "-o", tmp_path / "film.ts", *ARGS)
    assert code == 0, err
    assert sha256(tmp_path / "film.ts") == sha256(REND / "clear_video.ts")
    assert sha256(tmp_path / "film.audio-English.ts") == sha256(REND / "clear_audio.ts")
    assert "wrote the audio English rendition" in err


@pytest.mark.parametrize("choice, files", [("none", ["film.ts"]), ("English", ["film.audio-English.ts", "film.ts"]),
                                           ("en", ["film.audio-English.ts", "film.ts"])])
def test_audio_chooses_which_renditions(run, tmp_path, choice, files):
    code, err = run("decrypt", REND / "index.m3u8", "-o", tmp_path / "film.ts", "--audio", choice, *ARGS)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == files


def test_an_unknown_rendition_is_refused_naming_the_ones_there(run, tmp_path):
    code, err = run("decrypt", REND / "index.m3u8", "-o", tmp_path / "film.ts", "--audio", "French", *ARGS)
    assert code == 2 and "--audio 'French'" in err and "English (audio English)" in err
    assert list(tmp_path.iterdir()) == []


def test_an_existing_rendition_file_is_kept_unless_forced(run, tmp_path):
    (tmp_path / "film.audio-English.ts").write_bytes(b"mine")
    code, err = run("decrypt", REND / "index.m3u8", "-o", tmp_path / "film.ts", *ARGS)
    assert code == 7 and "film.audio-English.ts: exists" in err
    assert (tmp_path / "film.audio-English.ts").read_bytes() == b"mine"
    assert not (tmp_path / "film.ts").exists()  # refused before any of the stream was written


def test_remux_makes_one_file_and_keeps_the_ts_only_when_asked(run, tmp_path):
    pytest.importorskip("av", reason="pip install 'hlsdecrypt[remux]' (PyAV) for --remux")
    code, err = run("decrypt", REND / "index.m3u8", "-o", tmp_path / "film.mp4", "--remux", "mp4", *ARGS)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["film.mp4"]
    assert (tmp_path / "film.mp4").read_bytes()[4:8] == b"ftyp"
    code, err = run("decrypt", REND / "index.m3u8", "-o", tmp_path / "kept.mkv", "--remux", "mkv", "--keep-ts", *ARGS)
    assert code == 0, err
    assert sha256(tmp_path / "kept.ts") == sha256(REND / "clear_video.ts")
    assert sha256(tmp_path / "kept.audio-English.ts") == sha256(REND / "clear_audio.ts")
    assert (tmp_path / "kept.mkv").read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # EBML


def test_verify_checks_every_variant_and_rendition_of_a_master(run, tmp_path):
    report = tmp_path / "r.json"
    code, err = run("verify", REND / "index.m3u8", *ARGS, "--json", report)
    assert code == 0, err
    reports = json.loads(report.read_text())["reports"]
    assert [r["playlist"].split("renditions/")[1] for r in reports] == ["video/index.m3u8", "audio/index.m3u8"]


def test_an_audio_rendition_left_clear_fails_verify_and_variant_narrows_it(run, fixtures, tmp_path):
    (fixtures / "renditions/audio/index.m3u8").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXTINF:4.0,\n../clear_audio.ts\n#EXT-X-ENDLIST\n")
    code, err = run("verify", fixtures / "renditions/index.m3u8", *ARGS, "-q")
    assert code == 6
    assert "(audio English)" in err or "audio English" in err
    code, err = run("verify", fixtures / "renditions/index.m3u8", *ARGS, "--variant", "0", "-q")
    assert code == 0, err  # the video variant alone is fine


def test_keys_lists_and_exports_the_keys_of_the_variant_and_its_renditions(run, tmp_path):
    code, _ = run("keys", REND / "index.m3u8", "--export", tmp_path / "k.json", *ARGS)
    assert code == 0
    names = sorted(json.loads((tmp_path / "k.json").read_text()))
    assert [n.split("renditions/")[1] for n in names] == ["audio/key.bin", "video/key.bin"]  # both key.bin
    code, err = run("decrypt", REND / "index.m3u8", "-o", tmp_path / "film.ts", "--keys", tmp_path / "k.json",
                    "--key-source", "none")
    assert code == 0, err
    assert sha256(tmp_path / "film.audio-English.ts") == sha256(REND / "clear_audio.ts")
