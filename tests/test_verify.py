"""verify: each fault fails exactly the check that should fail; encrypt -> verify -> decrypt round-trips."""

from __future__ import annotations

import json
import re
import shutil
import stat
import xml.etree.ElementTree as ET
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from conftest import FIXTURES, sha256

from hlsdecrypt.verification import CHECKS

CLEAR = FIXTURES / "clear"
SCHEMA = json.loads(resources.files("hlsdecrypt").joinpath("verify-report.schema.json").read_text())


@pytest.fixture
def check(run, tmp_path):
    """Run verify with a JSON report: returns (exit code, {check: status}, report)."""

    def _check(*argv) -> tuple[int, dict[str, str], dict]:
        report_path = tmp_path / "report.json"
        code, _ = run("verify", *argv, "--json", report_path, "-q")
        report = json.loads(report_path.read_text())
        jsonschema.validate(report, SCHEMA)
        return code, {c["name"]: c["status"] for c in report["checks"]}, report

    return _check


def failing(statuses: dict[str, str]) -> set[str]:
    return {name for name, status in statuses.items() if status == "fail"}


@pytest.fixture
def encrypted(run, tmp_path) -> Path:
    """The clear fixture encrypted by ``encrypt``: a new key every 2 segments, implicit IVs."""
    out = tmp_path / "encrypted"
    code, err = run("encrypt", CLEAR / "index.m3u8", "-o", out, "--rotate", "2")
    assert code == 0, err
    return out


def test_encrypt_verify_decrypt_round_trip(run, check, encrypted, tmp_path):
    code, statuses, report = check(encrypted / "index.m3u8", "--reference", CLEAR / "clear.ts",
                                   "--expect-rotation", "2", "--strict")
    assert code == 0 and report["result"] == "pass"
    assert statuses == {"coverage": "pass", "segment-availability": "pass", "ciphertext": "pass",
                        "decryption": "pass", "key-availability": "pass",
                        "key-rotation": "pass", "key-reuse": "pass", "iv-reuse": "pass", "key-transport": "pass",
                        "reference": "pass"}
    assert (report["segments"], report["keys"]) == (6, 3)
    assert [c["name"] for c in report["checks"]] == [name for name, _ in CHECKS]  # the documented order
    code, err = run("decrypt", encrypted / "index.m3u8", "-o", tmp_path / "out.ts")
    assert code == 0, err
    assert sha256(tmp_path / "out.ts") == sha256(CLEAR / "clear.ts")
    assert stat.S_IMODE((encrypted / "keys.json").stat().st_mode) == 0o600


def test_encrypt_in_the_live_services_shape(run, check, tmp_path):
    out = tmp_path / "live"
    code, err = run("encrypt", CLEAR / "index.m3u8", "-o", out, "--rotate", "3", "--iv", "zero",
                    "--key-uri", "https://kms.example.com/get_hls_enc_key?key_id={key_id}")
    assert code == 0, err
    text = (out / "index.m3u8").read_text()
    assert text.count("key_id=") == 2 and text.count("IV=0x00000000000000000000000000000000") == 2
    code, statuses, _ = check(out / "index.m3u8", "--keys", out / "keys.json")
    assert code == 0 and statuses["iv-reuse"] == "warn"  # as the live service does: a warning unless --strict
    code, err = run("decrypt", out / "index.m3u8", "--keys", out / "keys.json", "--key-source", "none",
                    "-o", tmp_path / "out.ts")
    assert code == 0, err
    assert sha256(tmp_path / "out.ts") == sha256(CLEAR / "clear.ts")


def test_encrypt_refuses_a_stream_that_is_already_encrypted(run, tmp_path):
    code, err = run("encrypt", FIXTURES / "fmp4/index.m3u8", "-o", tmp_path / "out")
    assert code == 3 and "line 5: the stream is already encrypted" in err


def test_encrypt_keeps_init_sections_and_explicit_ivs_decryptable(run, check, tmp_path):
    clear = tmp_path / "clear-fmp4"
    shutil.copytree(FIXTURES / "fmp4", clear)
    code, err = run("decrypt", clear / "index.m3u8", "-o", tmp_path / "whole.mp4")
    assert code == 0, err
    media = _split_fmp4(clear)
    text = "\n".join(["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-TARGETDURATION:2", '#EXT-X-MAP:URI="init.mp4"']
                     + [f"#EXTINF:2.0,\nseg{i}.m4s" for i in range(len(media))] + ["#EXT-X-ENDLIST", ""])
    (clear / "index.m3u8").write_text(text)
    out = tmp_path / "enc"
    code, err = run("encrypt", clear / "index.m3u8", "-o", out, "--iv", "explicit", "--rotate", "2")
    assert code == 0, err
    assert "#EXT-X-MAP" in (out / "index.m3u8").read_text()
    code, statuses, _ = check(out / "index.m3u8", "--reference", tmp_path / "whole.mp4", "--strict")
    assert code == 0 and not failing(statuses), statuses
    code, err = run("decrypt", out / "index.m3u8", "-o", tmp_path / "again.mp4")
    assert code == 0, err
    assert sha256(tmp_path / "again.mp4") == sha256(FIXTURES / "fmp4/clear.mp4")


def _split_fmp4(folder: Path) -> list[bytes]:
    """Replace the fixture's encrypted files in ``folder`` by their clear bytes, cut from clear.mp4."""
    import struct

    whole = (FIXTURES / "fmp4/clear.mp4").read_bytes()
    boxes, pos = [], 0
    while pos < len(whole):
        size, kind = struct.unpack(">I4s", whole[pos:pos + 8])
        boxes.append((kind, whole[pos:pos + size]))
        pos += size
    init = b"".join(b for k, b in boxes[:2])  # ftyp, moov
    media, current = [], b""
    for kind, box in boxes[2:]:
        if kind == b"styp" and current:
            media.append(current)
            current = b""
        current += box
    media.append(current)
    (folder / "init.mp4").write_bytes(init)
    for i, data in enumerate(media):
        (folder / f"seg{i}.m4s").write_bytes(data)
    return media


def test_clear_segment_under_method_none_fails_coverage(check):
    code, statuses, report = check(FIXTURES / "mixed/index.m3u8")
    assert code == 6 and failing(statuses) == {"coverage"}
    evidence = next(c["evidence"] for c in report["checks"] if c["name"] == "coverage")
    assert "segment 24 (line 17): clear, METHOD=NONE after encrypted parts" in evidence


def test_clear_segment_labelled_aes_fails_ciphertext(check, encrypted):
    shutil.copy(CLEAR / "seg2.ts", encrypted / "seg00002.ts")
    code, statuses, report = check(encrypted / "index.m3u8")
    assert code == 6 and failing(statuses) == {"ciphertext"}
    evidence = next(c["evidence"] for c in report["checks"] if c["name"] == "ciphertext")
    assert any("segment 2 (line 12)" in e and "clear media" in e for e in evidence)


def test_wrong_key_for_one_key_id_fails_decryption(check, tmp_path):
    keys = json.loads((FIXTURES / "live_rotation/keys.json").read_text())
    second = list(keys)[1]
    keys[second] = "00" * 16
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    code, statuses, report = check(FIXTURES / "live_rotation/index.m3u8", "--keys", tmp_path / "keys.json",
                                   "--key-source", "none")
    assert code == 6 and failing(statuses) == {"decryption"}
    evidence = next(c["evidence"] for c in report["checks"] if c["name"] == "decryption")
    assert [e.split(":")[0] for e in evidence] == ["segment 107328 (line 14)", "segment 107329 (line 16)"]


def test_reused_iv_fails_only_under_strict(check):
    args = (FIXTURES / "live_rotation/index.m3u8", "--keys", FIXTURES / "live_rotation/keys.json")
    code, statuses, _ = check(*args)
    assert code == 0 and statuses["iv-reuse"] == "warn" and not failing(statuses)
    code, statuses, _ = check(*args, "--strict")
    assert code == 6 and failing(statuses) == {"iv-reuse"}


def test_missing_rotation_fails_key_rotation(check):
    code, statuses, report = check(FIXTURES / "implicit_iv/index.m3u8", "--expect-rotation", "2")
    assert code == 6 and failing(statuses) == {"key-rotation"}
    evidence = next(c["evidence"] for c in report["checks"] if c["name"] == "key-rotation")
    assert evidence == ["key key.bin (line 5): segments 7-12, 6 under one key"]


def test_block_aligned_truncation_fails_decryption(check, encrypted):
    seg = encrypted / "seg00003.ts"
    seg.write_bytes(seg.read_bytes()[:-32])
    code, statuses, report = check(encrypted / "index.m3u8")
    assert code == 6 and failing(statuses) == {"decryption"}
    evidence = next(c["evidence"] for c in report["checks"] if c["name"] == "decryption")
    assert evidence[0].startswith("segment 3 (line 14)")


def test_ragged_truncation_fails_ciphertext(check, encrypted):
    seg = encrypted / "seg00003.ts"
    seg.write_bytes(seg.read_bytes()[:-5])
    code, statuses, report = check(encrypted / "index.m3u8")
    assert code == 6 and failing(statuses) == {"ciphertext"}
    evidence = next(c["evidence"] for c in report["checks"] if c["name"] == "ciphertext")
    assert evidence == [f"segment 3 (line 14): {seg.stat().st_size} bytes, not a multiple of 16 (truncated?)"]


def test_one_key_under_two_key_ids_fails_key_reuse(run, check, tmp_path):
    given = tmp_path / "given.json"
    given.write_text(json.dumps({"kid-a": "11" * 16, "kid-b": "11" * 16, "kid-c": "22" * 16}))
    out = tmp_path / "enc"
    code, err = run("encrypt", CLEAR / "index.m3u8", "-o", out, "--rotate", "2", "--keys", given,
                    "--key-uri", "https://kms.example.com/k?key_id={key_id}")
    assert code == 0, err
    code, statuses, report = check(out / "index.m3u8", "--keys", out / "keys.json")
    assert code == 6 and failing(statuses) == {"key-reuse"}
    evidence = next(c["evidence"] for c in report["checks"] if c["name"] == "key-reuse")
    assert evidence == ["one key under 2 names: KeyID kid-a, KeyID kid-b"]


def test_unknown_key_fails_key_availability(check):
    code, statuses, report = check(FIXTURES / "live_rotation/index.m3u8", "--key-source", "none")
    assert code == 6 and failing(statuses) == {"key-availability"}
    assert statuses["decryption"] == "skip"


def test_reference_names_the_first_differing_segment(check, encrypted, tmp_path):
    reference = bytearray((CLEAR / "clear.ts").read_bytes())
    offset = len((CLEAR / "seg0.ts").read_bytes()) + len((CLEAR / "seg1.ts").read_bytes()) + 100
    reference[offset] ^= 0xFF
    (tmp_path / "ref.ts").write_bytes(reference)
    code, statuses, report = check(encrypted / "index.m3u8", "--reference", tmp_path / "ref.ts")
    assert code == 6 and failing(statuses) == {"reference"}
    evidence = next(c["evidence"] for c in report["checks"] if c["name"] == "reference")
    assert evidence == ["segment 2 (line 12) differs from the reference at its byte 100"]


def test_plain_http_key_uris_warn(check, served):
    code, statuses, _ = check(f"{served.url}/implicit_iv/index.m3u8")
    assert code == 0 and statuses["key-transport"] == "warn"


def test_junit_report_has_one_case_per_check(run, tmp_path):
    junit = tmp_path / "report.xml"
    code, _ = run("verify", FIXTURES / "mixed/index.m3u8", "--junit", junit, "-q")
    assert code == 6
    suite = ET.parse(junit).getroot().find("testsuite")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert len(cases) == 10 and suite.get("failures") == "1" and suite.get("tests") == "10"
    assert cases["coverage"].find("failure") is not None
    assert cases["reference"].find("skipped") is not None


def test_terminal_table_shows_each_check_and_the_evidence(capsys):
    from hlsdecrypt.cli import main

    assert main(["verify", str(FIXTURES / "mixed/index.m3u8")]) == 6
    out = capsys.readouterr().out
    assert re.search(r"^coverage +FAIL  3 of 6 parts are not encrypted$", out, re.M)
    assert "segment 20 (line 6): clear" in out and out.rstrip().endswith("result: FAIL")


def test_a_segment_that_cannot_be_read_fails_availability_in_the_report(check, fixtures):
    (fixtures / "implicit_iv/seg1.ts").unlink()
    code, statuses, report = check(fixtures / "implicit_iv/index.m3u8")
    assert code == 6 and failing(statuses) == {"segment-availability"}
    (evidence,) = next(c for c in report["checks"] if c["name"] == "segment-availability")["evidence"]
    assert "segment 8 (line 9)" in evidence and "seg1.ts" in evidence
    assert statuses["reference"] == "skip" and statuses["decryption"] == "pass"
