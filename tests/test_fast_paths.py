"""The fast paths of long recordings, at their edges: short parts read and decrypted a run at a
time, plain segments made without the m3u8 library, timeline lines written without the encoder.

Each test pins one behaviour those paths must keep exactly as the general ones have it.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from test_perf import _packet

from hlsdecrypt.playlist import parse

KEY = b"k" * 16


def _encrypted(clear: bytes, key: bytes, iv: bytes) -> bytes:
    from Crypto.Cipher import AES
    from Crypto.Util.Padding import pad

    return AES.new(key, AES.MODE_CBC, iv=iv).encrypt(pad(clear, 16))


def _iv(n: int) -> bytes:
    return n.to_bytes(16, "big")


def stream(folder: Path, sizes: list[int], *, header: str = "", key: bytes = KEY) -> tuple[Path, list[bytes]]:
    """Segments of ``sizes`` clear bytes (whole TS packets then filler), implicit IVs, one key file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "k.key").write_bytes(key)
    lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:2", header, '#EXT-X-KEY:METHOD=AES-128,URI="k.key"']
    clears = []
    for n, size in enumerate(sizes):
        body = b"".join(_packet(n * 100 + i) for i in range(size // 188 + 1))[:size]
        clears.append(body)
        (folder / f"s{n}.ts").write_bytes(_encrypted(body, key, _iv(n)))
        lines += ["#EXTINF:2,", f"s{n}.ts"]
    lines.append("#EXT-X-ENDLIST")
    (folder / "index.m3u8").write_text("\n".join(l for l in lines if l) + "\n")
    return folder / "index.m3u8", clears


# -- numbers, reports, short clear parts ---------------------------------------------------

HUGE_SEQUENCE = 10 ** 400  # a valid int to the m3u8 library and to json; too large for a float


def test_json_line_writes_an_integer_past_the_float_range_as_the_encoder_does():
    """``math.isfinite`` raises OverflowError for an int past ~1.8e308; ``json.dumps`` writes any int."""
    from hlsdecrypt.report import json_line
    from hlsdecrypt.verification import PartOutcome, _flat

    part = PartOutcome("segment x (line 6)", HUGE_SEQUENCE, "s0.ts", 2.0, False, "key k.key", 0, "ok", False)
    assert json_line(part) == json.dumps(_flat(part))


def test_verify_json_of_a_playlist_with_a_huge_media_sequence_is_whole_json(tmp_path):
    """The same end to end: an explicit IV spares the sequence from being an IV, so the stream
    verifies, and its report is whole JSON (not cut off after ``"timeline": [`` by an error)."""
    from hlsdecrypt.cli import main

    folder = tmp_path / "rec"
    folder.mkdir()
    (folder / "k.key").write_bytes(KEY)
    lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:2", f"#EXT-X-MEDIA-SEQUENCE:{HUGE_SEQUENCE}",
             '#EXT-X-KEY:METHOD=AES-128,URI="k.key",IV=0x0']
    for n in range(3):
        (folder / f"s{n}.ts").write_bytes(_encrypted(_packet(n), KEY, bytes(16)))
        lines += ["#EXTINF:2,", f"s{n}.ts"]
    (folder / "index.m3u8").write_text("\n".join([*lines, "#EXT-X-ENDLIST", ""]))
    report = tmp_path / "report.json"
    code = main(["verify", str(folder / "index.m3u8"), "--json", str(report), "-q"])
    document = json.loads(report.read_text())
    assert code == 0
    assert [p["sequence"] for p in document["timeline"]] == [HUGE_SEQUENCE + n for n in range(3)]


def test_write_json_of_an_iterable_of_reports_writes_them_all(tmp_path):
    """The reports are read twice (the document, the timelines in it): a generator must not be
    spent by the first, or a failing stream would be written as a passing document of none."""
    from hlsdecrypt.keys import KeyChain
    from hlsdecrypt.report import write_json
    from hlsdecrypt.verification import verify

    playlist, _ = stream(tmp_path / "rec", [188, 188])
    (tmp_path / "rec/s1.ts").write_bytes(_encrypted(_packet(1), b"q" * 16, _iv(1)))  # a wrong key: fails
    keys = KeyChain([])
    try:
        reports = [verify(str(playlist), keys=keys)]
    finally:
        keys.close()
    out = io.StringIO()
    write_json((r for r in reports), out)
    document = json.loads(out.getvalue())
    assert document["result"] == "fail"
    assert len(document["reports"]) == 1


def test_a_clear_part_of_one_to_four_bytes_is_a_media_check_error_not_a_crash(tmp_path):
    """Clear bytes that begin with the sync byte but are shorter than a packet (here one byte) pass
    the media check, which has nothing more to look at; they used to index past their end."""
    from hlsdecrypt.cli import main

    playlist, clears = stream(tmp_path / "rec", [188, 1, 188])
    out = tmp_path / "out.ts"
    code = main(["decrypt", str(playlist), "-o", str(out), "-q"])
    assert code == 0
    assert out.read_bytes() == b"".join(clears)


# -- short runs at their edges --------------------------------------------------------------

def _decrypt(*argv: object) -> int:
    from hlsdecrypt.cli import main

    return main([str(a) for a in argv])


def test_parts_either_side_of_the_short_limit_decrypt_byte_for_byte(tmp_path):
    # ciphertext 2048 (the last short size), 2064 (the first long one), 16 (an empty clear part), 0-clear too
    playlist, clears = stream(tmp_path / "rec", [2031, 2032, 2047, 2048, 0, 15, 16, 2032, 188, 188])
    assert _decrypt("decrypt", playlist, "-o", tmp_path / "out.ts", "-q") == 0
    assert (tmp_path / "out.ts").read_bytes() == b"".join(clears)


def test_short_byte_ranges_of_one_file_decrypt_byte_for_byte(tmp_path):
    folder = tmp_path / "rec"
    folder.mkdir()
    (folder / "k.key").write_bytes(KEY)
    lines, blob, clears = ["#EXTM3U", "#EXT-X-TARGETDURATION:2", '#EXT-X-KEY:METHOD=AES-128,URI="k.key"'], b"", []
    for n in range(6):
        clears.append(_packet(n) * (n + 1))
        body = _encrypted(clears[-1], KEY, _iv(n))
        lines += ["#EXTINF:2,", f"#EXT-X-BYTERANGE:{len(body)}@{len(blob)}", "all.ts"]
        blob += body
    (folder / "all.ts").write_bytes(blob)
    (folder / "index.m3u8").write_text("\n".join([*lines, "#EXT-X-ENDLIST", ""]))
    assert _decrypt("decrypt", folder / "index.m3u8", "-o", tmp_path / "out.ts", "-q") == 0
    assert (tmp_path / "out.ts").read_bytes() == b"".join(clears)


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_a_fifo_or_folder_inside_a_run_is_skipped_in_its_place(run, tmp_path, kind):
    playlist, clears = stream(tmp_path / "rec", [188] * 8)
    spot = tmp_path / "rec/s3.ts"
    spot.unlink()
    os.mkfifo(spot) if kind == "fifo" else spot.mkdir()
    code, err = run("decrypt", playlist, "-o", tmp_path / "out.ts", "--skip-missing")
    assert code == 5 and "segment 3 (line 11)" in err and "not a regular file" in err
    assert (tmp_path / "out.ts").read_bytes() == b"".join(clears[:3] + clears[4:])


def test_a_run_stopped_by_a_missing_key_leaves_the_parts_before_it_journaled(run, tmp_path):
    playlist, clears = stream(tmp_path / "rec", [188] * 20)
    text = playlist.read_text().replace("#EXTINF:2,\ns12.ts", '#EXT-X-KEY:METHOD=AES-128,URI="gone.key"\n#EXTINF:2,\ns12.ts')
    playlist.write_text(text)
    out = tmp_path / "out.ts"
    code, err = run("decrypt", playlist, "-o", out, "--resume")
    assert code == 4 and "gone.key" in err and "segments 12-19" in err
    assert json.loads((tmp_path / ".out.ts.part.json").read_text())["parts"] == 12
    assert (tmp_path / ".out.ts.part").read_bytes() == b"".join(clears[:12])


def _parsed_or_error(text: str, plain_segments: bool) -> object:
    try:
        return parse(text, "rec/index.m3u8", plain_segments=plain_segments)
    except Exception as exc:  # the same error either way, or the same plan
        return type(exc), str(exc)


def test_plain_segments_parse_the_same_in_playlists_the_perf_test_does_not_make():
    """Beyond tests/test_perf.py's alphabet: CRLF and lone CR, a BOM, blank and white lines, a
    second #EXTM3U, duplicate and odd-cased tags, MAP and KEY between plain segments, a master's
    tags, a 5,000-character URI, ``#`` alone, stray URIs."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    lines = st.sampled_from([
        "#EXTINF:2,", "#EXTINF:2,", "seg0.ts", "seg1.ts", "#EXTINF:3,#EXTINF:4,", "#EXTINF:#EXTINF:3,", "#EXTINF:1_0,",
        "#EXTINF:inf,", "#extinf:2,", "x" * 5000 + ".ts", "\ufeffseg.ts", "#", "", "   ", "\t", "#EXTM3U",
        '#EXT-X-KEY:METHOD=AES-128,URI="k1.key"', '#EXT-X-KEY:METHOD=AES-128,URI="k2.key",IV=0x1',
        '#EXT-X-KEY:METHOD=AES-128,URI="data:text/plain;base64,YWFhYWFhYWFhYWFhYWFhYQ=="', "#EXT-X-KEY:METHOD=NONE",
        '#EXT-X-MAP:URI="init.mp4"', '#EXT-X-MAP:URI="init2.mp4",BYTERANGE="64@0"', "#EXT-X-MAP:", "#EXT-X-MAP",
        "#EXT-X-BYTERANGE:188@0", "#EXT-X-DISCONTINUITY", "#EXT-X-DISCONTINUITY:1", "#EXT-X-GAP", "#EXT-X-GAP:x",
        "#EXT-X-MEDIA-SEQUENCE:7", "#EXT-X-MEDIA-SEQUENCE:x", "#EXT-X-ENDLIST", "#EXT-X-ENDLIST:x",
        "#EXT-X-DISCONTINUITY-SEQUENCE:3", "#EXT-X-BITRATE:100", "#EXT-X-CUE-IN", "#EXT-X-STREAM-INF:BANDWIDTH=1000",
        "#EXT-X-STREAM-INF", '#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="en",URI="a.m3u8"',
        '#EXT-X-I-FRAME-STREAM-INF:URI="i.m3u8"', "#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00Z",
    ])
    plain_bias = st.lists(st.one_of(lines.map(lambda x: [x]), st.just(["#EXTINF:2,", "seg9.ts"])), max_size=24)

    @settings(max_examples=400, deadline=None)
    @given(chunks=plain_bias, sep=st.sampled_from(["\n", "\r\n", "\r"]), head=st.sampled_from(
        ["#EXTM3U", "\ufeff#EXTM3U", "\n\n#EXTM3U", "  #EXTM3U  "]), tail=st.sampled_from(["", "\n", "\r\n\r\n", " "]))
    def check(chunks, sep, head, tail):
        text = sep.join([head, *(line for chunk in chunks for line in chunk)]) + tail
        assert _parsed_or_error(text, True) == _parsed_or_error(text, False)

    check()
