"""Streams as they are in the wild: low-latency playlists, gaps, several keys per segment, tags
decryption does not need, and keys inlined as data: URIs. Playlists are in fixtures/wild/."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from importlib import resources

import jsonschema
import pytest

from conftest import FIXTURES, sha256

from hlsdecrypt import Fetcher, decrypt, key_chain
from hlsdecrypt.errors import InputError, UnsupportedEncryption
from hlsdecrypt.playlist import MediaPlaylist, parse

WILD = FIXTURES / "wild"
SCHEMA = json.loads(resources.files("hlsdecrypt").joinpath("verify-report.schema.json").read_text())
KEY = bytes.fromhex("f54655c81cc15555f57e9983feeb4bc2")  # implicit_iv/key.bin


def clear_sha256(*segments: int) -> str:
    """The clear reference for these segments of the implicit_iv and explicit_iv fixtures."""
    return hashlib.sha256(b"".join((FIXTURES / f"clear/seg{i}.ts").read_bytes() for i in segments)).hexdigest()


ALL_SIX = clear_sha256(0, 1, 2, 3, 4, 5)


def test_the_references_are_the_fixtures_clear_recordings():
    assert ALL_SIX == sha256(FIXTURES / "implicit_iv/clear.ts") == sha256(FIXTURES / "explicit_iv/clear.ts")


# -- low-latency HLS -------------------------------------------------------------------------------


@pytest.mark.parametrize("playlist, reference", [
    ("llhls.m3u8", ALL_SIX),
    ("llhls_fmp4.m3u8", sha256(FIXTURES / "fmp4/clear.mp4")),
])
def test_low_latency_playlist_decrypts_its_complete_segments(playlist, reference, run, served, tmp_path):
    out = tmp_path / "out"
    code, err = run("decrypt", f"{served.url}/wild/{playlist}", "-o", out)
    assert code == 0, err
    assert sha256(out) == reference
    assert "no EXT-X-ENDLIST" in err  # a live playlist, said so
    assert not [path for path in served.hits if "part" in path.lower() or "init7" in path]  # parts and hints


def test_parts_of_the_segment_still_being_made_are_named_under_verbose(run, served, tmp_path):
    lines = (WILD / "llhls.m3u8").read_text().splitlines()
    first = lines.index('#EXT-X-PART:DURATION=0.33334,URI="filePart273.0.mp4",INDEPENDENT=YES') + 1
    code, err = run("decrypt", f"{served.url}/wild/llhls.m3u8", "-o", tmp_path / "out.ts", "-v")
    assert code == 0, err
    assert f"line {first}: leaving out the parts of a segment still being made" in err


def test_low_latency_parts_are_not_part_of_the_plan():
    text = (WILD / "llhls.m3u8").read_text()
    playlist = parse(text, str(WILD / "llhls.m3u8"))
    assert [p.sequence for p in playlist.segments] == [267, 268, 269, 270, 271, 272]
    lines = text.splitlines()
    assert [lines[p.line - 1] for p in playlist.segments] == [f"../explicit_iv/seg{i}.ts" for i in range(6)]


@pytest.mark.parametrize("text, line", [
    ("#EXTM3U\n#EXTINF:1,\nseg0.ts\n#EXTINF:1,\n", 4),  # cut off after a segment's EXTINF
    ("#EXTM3U\n#EXTINF:1,\nseg0.ts\n#EXT-X-BYTERANGE:100@0\n\n", 4),
    ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:seven\n#EXTINF:1,\nseg0.ts\n", 2),
    ("\n\n#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"k\",IV=0xnothex\n#EXTINF:1,\nseg0.ts\n", 4),
    ("#EXTM3U\n#EXT-X-MAP:BYTERANGE=\"10@0\"\n#EXTINF:1,\nseg0.ts\n", 2),
])
def test_playlist_errors_name_a_real_line(text, line):
    with pytest.raises(InputError) as caught:
        parse(text, "p.m3u8")
    message = str(caught.value)
    assert f"line {line}:" in message and "line 0" not in message


# -- EXT-X-GAP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "http"])
def test_gap_segment_is_never_fetched_and_the_rest_decrypts(where, run, served, fixtures, tmp_path):
    out = tmp_path / "out.ts"
    if where == "http":
        code, err = run("decrypt", f"{served.url}/wild/gap.m3u8", "-o", out)
    else:
        (fixtures / "implicit_iv/seg2.ts").unlink()  # a gap's URI need not exist
        code, err = run("decrypt", fixtures / "wild/gap.m3u8", "-o", out, "--allow-any-path")
    assert code == 0, err
    assert sha256(out) == clear_sha256(0, 1, 3, 4, 5)
    assert served.hits["/implicit_iv/seg2.ts"] == 0
    assert re.search(r"wrote 5 segments.*1 EXT-X-GAP", err), err


def test_gap_is_counted_in_the_result(tmp_path):
    fetcher = Fetcher(allow_any_path=True)
    keys = key_chain(source="uri", fetcher=fetcher)
    try:
        result = decrypt(str(WILD / "gap.m3u8"), str(tmp_path / "out.ts"), keys=keys, fetcher=fetcher)
    finally:
        keys.close()
    assert (result.segments, result.gaps, result.missing) == (6, 1, ())
    assert [p.sequence for p in result.playlist.segments if p.gap] == [9]


def test_skip_missing_does_not_list_a_gap_as_missing(run, fixtures, tmp_path):
    (fixtures / "implicit_iv/seg2.ts").unlink()
    code, err = run("decrypt", fixtures / "wild/gap.m3u8", "-o", tmp_path / "out.ts", "--allow-any-path",
                    "--skip-missing")
    assert code == 0, err
    assert "are missing" not in err and "skipping" not in err
    assert sha256(tmp_path / "out.ts") == clear_sha256(0, 1, 3, 4, 5)


def test_verify_reports_a_gap_as_a_gap(run, served, tmp_path):
    report_path = tmp_path / "report.json"
    code, err = run("verify", f"{served.url}/wild/gap.m3u8", "--json", report_path)
    assert code == 0, err
    report = json.loads(report_path.read_text())
    jsonschema.validate(report, SCHEMA)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["result"] == "pass" and checks["decryption"]["status"] == "pass"
    assert "1 EXT-X-GAP" in checks["coverage"]["summary"]
    assert checks["coverage"]["evidence"] == ["segment 9 (line 12): EXT-X-GAP, not fetched"]
    assert "5 encrypted parts" in checks["ciphertext"]["summary"]
    assert served.hits["/implicit_iv/seg2.ts"] == 0


# -- several EXT-X-KEY tags for one segment ------------------------------------------------------


@pytest.mark.parametrize("playlist", ["keys_identity_first.m3u8", "keys_identity_last.m3u8"])
def test_identity_key_is_used_whatever_the_order_of_key_tags(playlist, run, served, tmp_path):
    out = tmp_path / "out.ts"
    code, err = run("decrypt", f"{served.url}/wild/{playlist}", "-o", out)
    assert code == 0, err
    assert sha256(out) == ALL_SIX


HEAD = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n"
IDENTITY = '#EXT-X-KEY:METHOD=AES-128,URI="{}"\n'
FAIRPLAY = '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://{}",KEYFORMAT="com.apple.streamingkeydelivery"\n'


def _keys_of(text: str) -> list[str | None]:
    playlist = parse(text, "/streams/p.m3u8")
    assert isinstance(playlist, MediaPlaylist)
    return [p.key.uri if p.key else None for p in playlist.segments]


def test_key_tags_apply_per_format_until_the_next_of_the_same_format():
    text = (HEAD + IDENTITY.format("a.key") + FAIRPLAY.format("one") + "#EXTINF:1,\ns0.ts\n"
            + FAIRPLAY.format("two") + "#EXTINF:1,\ns1.ts\n"  # only the FairPlay key changes
            + IDENTITY.format("b.key") + "#EXTINF:1,\ns2.ts\n"
            + "#EXT-X-KEY:METHOD=NONE\n#EXTINF:1,\ns3.ts\n"  # NONE ends every key in force
            + FAIRPLAY.format("three") + IDENTITY.format("c.key") + "#EXTINF:1,\ns4.ts\n")
    assert _keys_of(text) == ["a.key", "a.key", "b.key", None, "c.key"]


def test_only_a_key_of_another_format_is_unsupported_and_named_by_its_line():
    with pytest.raises(UnsupportedEncryption, match=r"line 3: KEYFORMAT=com.apple.streamingkeydelivery"):
        parse(HEAD + FAIRPLAY.format("one") + "#EXTINF:1,\ns0.ts\n", "p.m3u8")
    with pytest.raises(UnsupportedEncryption, match=r"line 5: KEYFORMAT"):  # after NONE, FairPlay alone
        parse(HEAD + IDENTITY.format("a.key") + "#EXT-X-KEY:METHOD=NONE\n" + FAIRPLAY.format("x")
              + "#EXTINF:1,\ns0.ts\n", "p.m3u8")


def test_key_tag_between_extinf_and_uri_applies_to_that_segment():
    text = (HEAD + IDENTITY.format("a.key") + "#EXTINF:1,\n" + FAIRPLAY.format("x") + IDENTITY.format("b.key")
            + "s0.ts\n")
    assert _keys_of(text) == ["b.key"]


# -- tags decryption does not need ---------------------------------------------------------------


def test_tags_decryption_does_not_need_are_tolerated_and_named_under_verbose(run, tmp_path):
    out = tmp_path / "out.ts"
    code, err = run("decrypt", WILD / "tolerant.m3u8", "-o", out, "--allow-any-path", "-v")
    assert code == 0, err
    assert sha256(out) == ALL_SIX
    # two blank lines before #EXTM3U: line numbers still count them
    assert re.search(r"line 5: .*#EXT-X-TARGETDURATION", err), err
    assert re.search(r"line 7: .*#EXT-X-PROGRAM-DATE-TIME", err), err
    assert re.search(r"line 9: .*#EXTINF", err), err
    code, err = run("decrypt", WILD / "tolerant.m3u8", "-o", tmp_path / "quiet.ts", "--allow-any-path")
    assert code == 0 and "TARGETDURATION" not in err  # a debug-level note, not a warning


def test_tolerated_playlist_still_names_exact_lines_in_errors(run, fixtures, tmp_path):
    (fixtures / "implicit_iv/seg3.ts").unlink()
    code, err = run("decrypt", fixtures / "wild/tolerant.m3u8", "-o", tmp_path / "out.ts", "--allow-any-path")
    assert code == 5 and "segment 10 (line 16)" in err, err


def test_master_with_an_i_frame_playlist_the_parser_cannot_read(run, served, tmp_path):
    out = tmp_path / "out.ts"
    code, err = run("decrypt", f"{served.url}/wild/tolerant_master.m3u8", "-o", out, "-v")
    assert code == 0, err
    assert sha256(out) == ALL_SIX
    assert re.search(r"line 4: .*#EXT-X-I-FRAME-STREAM-INF", err), err
    assert re.search(r"line 5: .*AVERAGE-BANDWIDTH", err), err


def test_a_malformed_tag_decryption_needs_is_an_error_naming_its_line():
    with pytest.raises(InputError, match=r"line 3: .*BANDWIDTH"):
        parse("#EXTM3U\n\n#EXT-X-STREAM-INF:BANDWIDTH=lots\nv.m3u8\n", "m.m3u8")


def test_delta_playlist_is_refused_rather_than_numbered_wrong():
    text = ("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:266\n#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n"
            "#EXT-X-KEY:METHOD=AES-128,URI=\"k\"\n#EXTINF:4,\nfileSequence269.mp4\n")
    with pytest.raises(InputError, match=r"line 3: .*EXT-X-SKIP"):
        parse(text, "p.m3u8")


# -- data: key URIs ----------------------------------------------------------------------------

B64 = base64.b64encode(KEY).decode()
SECRETS = (B64, B64.rstrip("="), "%F5FU%C8", KEY.hex(), "base64,", "octet-stream,")


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s.lower() in text.lower()]


@pytest.mark.parametrize("playlist", ["data_base64.m3u8", "data_percent.m3u8"])
def test_data_uri_key_is_decoded_and_never_shown(playlist, run, served, tmp_path):
    source = f"{served.url}/wild/{playlist}"
    out = tmp_path / "out.ts"
    code, err = run("decrypt", source, "-o", out, "-v")
    assert code == 0, err
    assert sha256(out) == ALL_SIX
    assert not _leaks(err), err
    code, err = run("keys", source, "-v")
    assert code == 0 and not _leaks(err), err
    report_path = tmp_path / "report.json"
    code, err = run("verify", source, "--json", report_path, "-v")
    assert code == 0, err
    assert not _leaks(err) and not _leaks(report_path.read_text())
    jsonschema.validate(json.loads(report_path.read_text()), SCHEMA)


def test_keys_listing_names_a_data_uri_key_by_its_line(capsys):
    from hlsdecrypt.cli import main

    assert main(["keys", str(WILD / "data_base64.m3u8"), "-q"]) == 0
    listing = capsys.readouterr().out
    assert not _leaks(listing), listing
    assert re.search(r"key on line 5\s+inline\s+6\s+5\n", listing), listing


def test_data_uri_key_stays_hidden_in_reprs():
    playlist = parse((WILD / "data_base64.m3u8").read_text(), str(WILD / "data_base64.m3u8"))
    assert not _leaks(repr(playlist))
    ref = playlist.keys[0]
    assert ref.name == "key on line 5" and not _leaks(ref.identity)


@pytest.mark.parametrize("uri", ["data:text/plain;base64," + base64.b64encode(KEY[:15]).decode(),
                                 "data:text/plain;base64,%%%%",
                                 "data:," + KEY.hex()])
def test_data_uri_that_is_not_a_key_names_the_line_and_not_the_uri(uri, run, fixtures, tmp_path):
    playlist = fixtures / "wild/data_base64.m3u8"
    playlist.write_text(playlist.read_text().replace(f"data:text/plain;base64,{B64}", uri))
    code, err = run("decrypt", playlist, "-o", tmp_path / "out.ts", "--allow-any-path", "-v")
    assert code == 4, err
    assert "line 5" in err
    assert uri.partition(",")[2] not in err and "data:text" not in err, err


def test_verify_counts_one_data_uri_written_twice_as_one_key(run, fixtures, tmp_path):
    playlist = fixtures / "wild/data_base64.m3u8"
    tag = f'#EXT-X-KEY:METHOD=AES-128,URI="data:text/plain;base64,{B64}"\n'
    playlist.write_text(playlist.read_text().replace("#EXTINF:1.000000,\n../implicit_iv/seg3.ts",
                                                     tag + "#EXTINF:1.000000,\n../implicit_iv/seg3.ts"))
    report_path = tmp_path / "report.json"
    code, err = run("verify", playlist, "--allow-any-path", "--json", report_path)
    assert code == 0, err
    checks = {c["name"]: c for c in json.loads(report_path.read_text())["checks"]}
    assert checks["key-reuse"]["status"] == "pass" and checks["key-reuse"]["summary"] == "one key"
    assert not _leaks(report_path.read_text())


def test_key_file_still_finds_a_data_uri_key_by_its_uri(run, tmp_path):
    uri = f"data:text/plain;base64,{B64}"
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({uri: KEY.hex()}))
    code, err = run("decrypt", WILD / "data_base64.m3u8", "-o", tmp_path / "out.ts", "--allow-any-path",
                    "--keys", keys, "--key-source", "none")
    assert code == 0, err
    assert sha256(tmp_path / "out.ts") == ALL_SIX
