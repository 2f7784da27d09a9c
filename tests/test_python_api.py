"""The documented Python API, used as a QA suite would: only ``from hlsdecrypt import …``."""

from __future__ import annotations

import hashlib
import io
import json

import pytest

from conftest import FIXTURES, sha256

from hlsdecrypt import (HlsDecryptError, InputError, KeyUnavailable, OutputExists, UsageError, decrypt, encrypt,
                        export_keys, key_chain, list_keys, verify, write_json, write_junit)

LIVE = FIXTURES / "live_rotation"


@pytest.fixture
def live_keys():
    with key_chain(keys_file=str(LIVE / "keys.json"), source="none") as keys:
        yield keys


def test_decrypt_to_a_path_a_folder_and_a_file_object(live_keys, tmp_path):
    result = decrypt(str(LIVE / "index.m3u8"), tmp_path / "out.ts", keys=live_keys)
    assert sha256(tmp_path / "out.ts") == sha256(LIVE / "clear.ts")
    assert (result.written_segments, result.keys, result.output) == (6, 3, str(tmp_path / "out.ts"))
    into = decrypt(str(LIVE / "index.m3u8"), str(tmp_path), keys=live_keys)
    assert into.output == str(tmp_path / "live_rotation.ts") and sha256(tmp_path / "live_rotation.ts") == sha256(
        LIVE / "clear.ts")
    buffer = io.BytesIO()
    decrypt(str(LIVE / "index.m3u8"), buffer, keys=live_keys)
    assert hashlib.sha256(buffer.getvalue()).hexdigest() == sha256(LIVE / "clear.ts")


def test_errors_name_arguments_as_python_spells_them(live_keys, tmp_path):
    (tmp_path / "out.ts").write_bytes(b"keep me")
    with pytest.raises(OutputExists, match=r"force=True") as caught:
        decrypt(str(LIVE / "index.m3u8"), tmp_path / "out.ts", keys=live_keys)
    assert caught.value.option == "force" and caught.value.exit_code == 7
    with pytest.raises(UsageError, match=r"^expect_rotation must be at least 1$"):
        verify(str(LIVE / "index.m3u8"), keys=live_keys, expect_rotation=0)
    with pytest.raises(UsageError) as caught:
        key_chain(keys_file=str(tmp_path / "nowhere.json"))
    assert caught.value.option == "keys_file" and "--" not in str(caught.value)


def test_a_failed_segment_error_carries_its_part(tmp_path, fixtures):
    (fixtures / "implicit_iv/seg2.ts").write_bytes(b"\0" * 32)
    with pytest.raises(HlsDecryptError) as caught:
        decrypt(str(fixtures / "implicit_iv/index.m3u8"), tmp_path / "out.ts")
    assert caught.value.part is not None and caught.value.part.sequence == 9
    assert str(caught.value).startswith("segment 9 (line 11): ")


def test_verify_a_good_stream_and_report_it_for_ci(live_keys, tmp_path):
    report = verify(str(LIVE / "index.m3u8"), keys=live_keys, expect_rotation=2)
    assert report.passed, report.table()
    assert [c.name for c in report.checks][:2] == ["coverage", "segment-availability"]
    write_json(report, str(tmp_path / "r.json"))
    write_junit([report, report], str(tmp_path / "r.xml"))
    assert json.loads((tmp_path / "r.json").read_text())["result"] == "pass"
    assert (tmp_path / "r.xml").read_text().count("<testsuite ") == 2


def test_verify_a_broken_stream(tmp_path, fixtures):
    (fixtures / "live_rotation/HD_1080p_1715075942927_3070957834_107329.ts").unlink()
    with key_chain(keys_file=str(LIVE / "keys.json"), source="none") as keys:
        report = verify(str(fixtures / "live_rotation/index.m3u8"), keys=keys, expect_rotation=1)
    assert not report.passed
    assert {c.name for c in report.checks if c.status == "fail"} == {"segment-availability", "key-rotation"}
    assert "segment 107329" in report.check("segment-availability").evidence[0]
    assert "FAIL" in report.table()


def test_encrypt_then_list_export_verify_and_decrypt(tmp_path):
    made = encrypt(str(FIXTURES / "clear/index.m3u8"), str(tmp_path / "enc"), rotate=2, iv="zero",
                   key_uri="https://kms.example.com/k?key_id={key_id}")
    listing = list_keys(str(made.playlist))
    assert [k.kind for k in listing.keys] == ["KeyID"] * 3 and listing.encrypted == 6
    with key_chain(keys_file=str(tmp_path / "enc/keys.json"), source="none") as keys:
        export_keys(str(made.playlist), str(tmp_path / "exported.json"), keys=keys)
        report = verify(str(made.playlist), keys=keys, reference=str(FIXTURES / "clear/clear.ts"),
                        expect_rotation=2)
        assert report.passed, report.table()
        decrypt(str(made.playlist), tmp_path / "out.ts", keys=keys)
    assert json.loads((tmp_path / "exported.json").read_text()) == json.loads((tmp_path / "enc/keys.json").read_text())
    assert sha256(tmp_path / "out.ts") == sha256(FIXTURES / "clear/clear.ts")


def test_missing_keys_and_bad_input_raise_their_own_classes(tmp_path):
    with key_chain(source="none") as nothing, pytest.raises(KeyUnavailable):
        decrypt(str(LIVE / "index.m3u8"), tmp_path / "out.ts", keys=nothing)
    (tmp_path / "bad.m3u8").write_text("not a playlist\n")
    with pytest.raises(InputError, match="line 1"):
        decrypt(str(tmp_path / "bad.m3u8"), tmp_path / "out.ts")
    assert not (tmp_path / "out.ts").exists()


def test_every_public_name_is_what_it_says_even_after_every_module_is_imported():
    """A lazily exported function named like a submodule would be shadowed by that module."""
    import importlib
    import pkgutil
    import types

    import hlsdecrypt

    for module in pkgutil.iter_modules(hlsdecrypt.__path__):
        if module.name != "__main__":
            importlib.import_module(f"hlsdecrypt.{module.name}")
    for name in hlsdecrypt.__all__:
        assert not isinstance(getattr(hlsdecrypt, name), types.ModuleType), name
