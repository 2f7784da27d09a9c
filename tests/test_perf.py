"""Start-up and scale: what a command imports, and the pieces that keep a long playlist's cost linear.

Timings live in benchmarks/run.py, never here: these tests pin the properties behind the figures,
each of which a change could lose without any other test noticing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import FIXTURES, sha256

from hlsdecrypt.cli import main
from hlsdecrypt.output import BackgroundWriter
from hlsdecrypt.uris import real_path
from hlsdecrypt.playlist import _PLAIN_PATH, parse, resolve

ROOT = Path(__file__).resolve().parent.parent
LIVE = FIXTURES / "live_rotation"
HEAVY = ("m3u8", "Crypto", "requests", "urllib3")

# Runs a command in a fresh interpreter (imports are per process), then reports what it imported:
# the modules the interpreter had before (what site and .pth files load) are not the command's.
_IMPORTS_OF = """
import sys
before = set(sys.modules)
import json
from hlsdecrypt.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as done:  # --version and --help end this way
    code = done.code
print(json.dumps({"code": code, "modules": sorted(set(sys.modules) - before)}))
"""


def imports_of(*argv: str | Path, tmp_path: Path) -> tuple[int, set[str], str]:
    """(exit code, modules imported, stdout before the report) of ``hlsdecrypt ARGV`` run from this tree."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("VOLC", "HLSDECRYPT_"))}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]), HOME=str(tmp_path / "home"),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", _IMPORTS_OF, *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, check=True)
    *shown, last = done.stdout.splitlines()
    report = json.loads(last)
    return report["code"], set(report["modules"]), "\n".join(shown)


def loaded(modules: set[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


@pytest.mark.parametrize("option", ["--version", "--help"])
def test_version_and_help_import_no_library_and_no_command(tmp_path, option):
    code, modules, shown = imports_of(option, tmp_path=tmp_path)
    assert code == 0 and shown.startswith("hlsdecrypt 0." if option == "--version" else "usage: hlsdecrypt")
    assert [p for p in HEAVY if loaded(modules, p)] == []
    commands = ("pipeline", "fetch", "keys", "verify", "inventory", "encrypt", "http", "playlist", "crypto")
    assert [m for m in commands if f"hlsdecrypt.{m}" in modules] == []
    # the arguments are parsed before logging, signals and the config file are set up, and these two end there
    setup = ("logging", "signal", "dataclasses", "inspect", "hlsdecrypt.config", "hlsdecrypt.progress")
    assert [m for m in setup if m in modules] == []


def test_the_defaults_the_help_shows_are_the_librarys():
    from hlsdecrypt import defaults, fetch

    assert fetch.DEADLINE == defaults.DEADLINE  # fetch keeps a copy of its own


def test_a_local_decrypt_imports_no_http_library(tmp_path):
    out = tmp_path / "clear.ts"  # the README's quick start
    code, modules, _ = imports_of("decrypt", LIVE / "index.m3u8", "--keys", LIVE / "keys.json", "-o", out,
                                  tmp_path=tmp_path)
    assert code == 0 and sha256(out) == sha256(LIVE / "clear.ts")
    assert not loaded(modules, "requests") and not loaded(modules, "urllib3")
    assert loaded(modules, "m3u8") and loaded(modules, "Crypto")  # so the check above ran where they are needed
    # what only requests, --cookies, a summary or verify need (ssl is not listed: the m3u8 package imports it)
    unneeded = ("http.cookiejar", "xml.etree", "hlsdecrypt.summary", "hlsdecrypt.report", "hlsdecrypt.verification",
                "hlsdecrypt.live", "hlsdecrypt.api", "hlsdecrypt.shard")
    assert [m for m in unneeded if loaded(modules, m)] == []


def test_a_json_summary_imports_the_summary_but_not_the_verifier(tmp_path):
    out, summary = tmp_path / "clear.ts", tmp_path / "summary.json"
    code, modules, _ = imports_of("decrypt", LIVE / "index.m3u8", "--keys", LIVE / "keys.json", "-o", out,
                                  "--json-summary", summary, tmp_path=tmp_path)
    assert code == 0 and sha256(out) == sha256(LIVE / "clear.ts")
    assert json.loads(summary.read_text())["streams"][0]["status"] == "ok"
    assert "hlsdecrypt.summary" in modules
    unneeded = ("xml.etree", "hlsdecrypt.report", "hlsdecrypt.verification", "hlsdecrypt.live", "hlsdecrypt.api")
    assert [m for m in unneeded if loaded(modules, m)] == []


# -- a long recording, built as the benchmark builds it ----------------------------------

@pytest.fixture(scope="module")
def long_stream(tmp_path_factory) -> Path:
    """3,000 segments under 100 KeyIDs: the live service's shape, long enough to show a slip into
    per-part work that grows with the playlist (a benchmark runs the same with 100,000)."""
    path = tmp_path_factory.mktemp("long") / "rec"
    subprocess.run([sys.executable, str(ROOT / "benchmarks/make_long_playlist.py"), str(path), "--segments", "3000"],
                   check=True, capture_output=True)
    return path


def test_a_long_playlist_decrypts_byte_for_byte_and_lists_its_keys(run, capsys, long_stream, tmp_path):
    keys = ["--keys", long_stream / "keys.json", "--key-source", "none"]
    code, err = run("decrypt", long_stream / "index.m3u8", *keys, "-o", tmp_path / "out.ts")
    assert code == 0, err
    assert sha256(tmp_path / "out.ts") == (long_stream / "clear.sha256").read_text().strip()
    assert main(["keys", str(long_stream / "index.m3u8")]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[-1] == "100 keys, 3000 encrypted parts, 0 clear"
    assert all(line.split()[2] == "30" for line in listing[1:-1])


def test_a_long_playlist_verifies_with_a_timeline_of_every_part(run, long_stream, tmp_path):
    report = tmp_path / "report.json"
    code, err = run("verify", long_stream / "index.m3u8", "--keys", long_stream / "keys.json", "--key-source", "none",
                    "--json", report, "-q")
    assert code == 0, err
    document = json.loads(report.read_text())
    assert len(document["timeline"]) == 3000 and {p["status"] for p in document["timeline"]} == {"ok"}
    assert document["timeline"][-1]["key_index"] == 99
    assert {c["name"]: c["status"] for c in document["checks"]}["iv-reuse"] == "warn"  # one zero IV per key


def test_a_resumed_long_run_is_byte_identical(run, long_stream, tmp_path):
    out = tmp_path / "out.ts"
    code, err = run("decrypt", long_stream / "index.m3u8", "--keys", long_stream / "keys.json", "--key-source",
                    "none", "-o", out, "--resume")
    assert code == 0, err
    assert sha256(out) == (long_stream / "clear.sha256").read_text().strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ts"]  # journal gone


def test_a_failed_resumable_run_journals_every_part_it_wrote(run, fixtures, tmp_path):
    """The journal is rewritten a few times a second, not after every part: so it is written once
    more when a run stops, lest the next run redo what this one did."""
    (fixtures / "implicit_iv/seg4.ts").unlink()
    out = tmp_path / "out.ts"
    code, _ = run("decrypt", fixtures / "implicit_iv/index.m3u8", "-o", out, "--resume")
    assert code == 5
    journal = json.loads((tmp_path / ".out.ts.part.json").read_text())
    assert journal["parts"] == 4  # seg0-seg3
    assert journal["bytes"] == sum((FIXTURES / f"clear/seg{i}.ts").stat().st_size for i in range(4))


# -- short parts, read and decrypted a run at a time ----------------------------------------

def _packet(n: int) -> bytes:
    return bytes([0x47, 0x01, 0x00, 0x10 | (n & 0x0F)]) + n.to_bytes(8, "big") * 23


def _encrypted(clear: bytes, key: bytes, sequence: int) -> bytes:
    from Crypto.Cipher import AES
    from Crypto.Util.Padding import pad

    return AES.new(key, AES.MODE_CBC, iv=sequence.to_bytes(16, "big")).encrypt(pad(clear, 16))


def short_stream(folder: Path, segments: int = 150) -> dict[int, bytes]:
    """``segments`` one-packet segments with implicit IVs (each its own ciphertext): keys change at
    10 and 75, segments 20 and 21 are long (16 packets), 40-42 are clear (METHOD=NONE) and 50 is a
    gap. Returns each written segment's clear bytes, by number."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = {0: b"k" * 16, 10: b"l" * 16, 75: b"m" * 16}
    lines, clear = ["#EXTM3U", "#EXT-X-TARGETDURATION:2", "#EXT-X-MEDIA-SEQUENCE:0"], {}
    key = b""
    for n in range(segments):
        if n in keys or n == 43:
            key = keys.get(n, key)
            (folder / f"{key[:1].decode()}.key").write_bytes(key)
            lines.append(f'#EXT-X-KEY:METHOD=AES-128,URI="{key[:1].decode()}.key"')
        if n == 40:
            lines.append("#EXT-X-KEY:METHOD=NONE")
        if n == 50:
            lines.append("#EXT-X-GAP")
        lines += ["#EXTINF:2,", f"seg{n}.ts"]
        if n == 50:
            continue
        clear[n] = b"".join(_packet(n * 100 + i) for i in range(16 if n in (20, 21) else 1))
        (folder / f"seg{n}.ts").write_bytes(clear[n] if 40 <= n <= 42 else _encrypted(clear[n], key, n))
    (folder / "index.m3u8").write_text("\n".join([*lines, "#EXT-X-ENDLIST", ""]))
    return clear


def test_short_parts_decrypt_byte_for_byte_across_runs_keys_gaps_and_long_parts(run, tmp_path):
    clear = short_stream(tmp_path / "rec")
    code, err = run("decrypt", tmp_path / "rec/index.m3u8", "-o", tmp_path / "out.ts")
    assert code == 0, err
    assert (tmp_path / "out.ts").read_bytes() == b"".join(clear.values())


@pytest.mark.parametrize("spoil", ["wrong key", "not media"])
def test_a_bad_short_part_fails_at_its_own_turn_after_the_parts_before_it(run, tmp_path, spoil):
    clear = short_stream(tmp_path / "rec")
    bad = 7 if spoil == "wrong key" else 90  # inside the first run of short parts, and a later one
    key = b"q" * 16 if spoil == "wrong key" else (b"m" if bad >= 75 else b"k") * 16
    body = b"\x00" * 188 if spoil == "not media" else clear[bad]
    (tmp_path / f"rec/seg{bad}.ts").write_bytes(_encrypted(body, key, bad))
    out = tmp_path / "out.ts"
    code, err = run("decrypt", tmp_path / "rec/index.m3u8", "-o", out, "--resume")
    assert code == 5
    line = (tmp_path / "rec/index.m3u8").read_text().splitlines().index(f"seg{bad}.ts") + 1
    assert f"segment {bad} (line {line})" in err.strip().splitlines()[-1]
    assert ("padding" if spoil == "wrong key" else "MPEG-TS") in err
    before = [n for n in clear if n < bad]
    assert json.loads((tmp_path / ".out.ts.part.json").read_text())["parts"] == len(before) + (bad > 50)  # + the gap
    assert (tmp_path / ".out.ts.part").read_bytes() == b"".join(clear[n] for n in before)


def test_a_missing_short_part_is_skipped_in_its_place(run, tmp_path):
    clear = short_stream(tmp_path / "rec")
    (tmp_path / "rec/seg5.ts").unlink()
    del clear[5]
    code, err = run("decrypt", tmp_path / "rec/index.m3u8", "-o", tmp_path / "out.ts", "--skip-missing")
    assert code != 0 and "segment 5 (line" in err
    assert (tmp_path / "out.ts").read_bytes() == b"".join(clear.values())


def test_verify_judges_each_short_part_alone_though_they_are_decrypted_together(run, tmp_path):
    clear = short_stream(tmp_path / "rec")
    (tmp_path / "rec/seg7.ts").write_bytes(_encrypted(clear[7], b"q" * 16, 7))  # a wrong key
    (tmp_path / "rec/seg90.ts").write_bytes(_encrypted(b"\x00" * 188, b"m" * 16, 90))  # not media
    (tmp_path / "rec/seg5.ts").unlink()
    (tmp_path / "rec/l.key").unlink()  # segments 10-39 and 43-74
    report = tmp_path / "report.json"
    code, err = run("verify", tmp_path / "rec/index.m3u8", "--json", report, "-q")
    assert code == 6, err
    timeline = json.loads(report.read_text())["timeline"]
    failed = {p["sequence"]: p["problem"] for p in timeline if p["status"] == "failed"}
    no_key = {*range(10, 40), *range(43, 75)} - {50}
    assert set(failed) == {5, 7, 90} | no_key
    assert "padding" in failed[7] and "MPEG-TS" in failed[90] and all("no key" in failed[n] for n in no_key)
    assert {p["status"] for p in timeline if p["sequence"] not in failed} == {"ok", "clear"}


def test_verify_of_short_parts_matches_the_clear_reference(run, tmp_path):
    clear = short_stream(tmp_path / "rec")
    (tmp_path / "clear.ts").write_bytes(b"".join(clear.values()))
    report = tmp_path / "report.json"
    code, err = run("verify", tmp_path / "rec/index.m3u8", "--reference", tmp_path / "clear.ts", "--json", report, "-q")
    checks = {c["name"]: c["status"] for c in json.loads(report.read_text())["checks"]}
    assert checks["reference"] == checks["decryption"] == "pass"
    assert code == 6 and checks["coverage"] == "fail"  # its clear segments, 40-42


def test_only_the_first_files_are_sized_before_a_run(tmp_path, monkeypatch):
    """One lstat per file is a tenth of a 100,000-segment run: past SIZED_AHEAD files, the progress
    line estimates; byte ranges and gaps cost nothing and are always known."""
    from hlsdecrypt import pipeline
    from hlsdecrypt.fetch import Fetcher

    short_stream(tmp_path / "rec", segments=60)
    fetcher = Fetcher()
    playlist = pipeline.load_stream(str(tmp_path / "rec/index.m3u8"), fetcher).playlist
    monkeypatch.setattr(pipeline, "SIZED_AHEAD", 45)
    sizes = pipeline.expected_sizes(playlist.parts, fetcher)
    on_disk = [os.path.getsize(p.uri) if not p.gap else 0 for p in playlist.parts]
    assert sizes[:45] == on_disk[:45] and sizes[20] == 16 * 188 + 16  # a long one, with a block of padding
    assert sizes[45:] == [None] * 5 + [0] + [None] * 9  # segment 50 is a gap


# -- the pieces ----------------------------------------------------------------------------

def test_a_playlists_segments_and_keys_are_computed_once():
    playlist = parse((LIVE / "index.m3u8").read_text(), str(LIVE / "index.m3u8"))
    assert playlist.segments is playlist.segments and playlist.keys is playlist.keys
    assert len(playlist.segments) == 6 and len(playlist.keys) == 3


def test_the_writer_keeps_order_and_runs_calls_after_their_bytes(tmp_path):
    """Small chunks are batched, large ones handed over as they are; calls may run late, never early."""
    path = tmp_path / "out.bin"
    seen: list[tuple[int, int]] = []  # (bytes queued before the call, bytes in the file when it ran)
    expected = bytearray()
    with open(path, "wb") as f:
        writer = BackgroundWriter(f, 2, batch=1000, linger=3600)

        def record(queued: int = 0) -> None:
            f.flush()
            seen.append((queued, os.path.getsize(path)))

        for n, size in enumerate([10, 999, 1000, 3, 5000, 1, 1, 700, 0, 2500, 9]):
            chunk = bytes([n]) * size
            writer.write(chunk)
            expected += chunk
            writer.call(lambda queued=len(expected): record(queued))
        writer.close()
    assert path.read_bytes() == expected
    assert len(seen) == 11 and all(written >= queued for queued, written in seen)


def test_a_writer_error_surfaces_at_the_next_write(tmp_path):
    class Full:
        def write(self, data: bytes) -> None:
            raise OSError(28, "No space left on device")

    writer = BackgroundWriter(Full(), 1, batch=10, linger=3600)  # type: ignore[arg-type]
    writer.write(b"x" * 100)
    with pytest.raises(OSError, match="No space"):
        writer.close()


def test_real_paths_are_os_realpath_with_each_folder_resolved_once(tmp_path, monkeypatch):
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "a.ts").write_bytes(b"a")
    (tmp_path / "linked").symlink_to(real)
    (real / "link.ts").symlink_to(real / "a.ts")
    (real / "up.ts").symlink_to("../elsewhere.ts")
    monkeypatch.chdir(tmp_path)
    paths = ["real/a.ts", "linked/a.ts", "linked/link.ts", "real/up.ts", "linked/sub/../a.ts", "linked/missing.ts",
             "linked/sub/..", "linked/", str(tmp_path / "linked/sub/x.ts"), "a.ts", ".", "", "/", "real//a.ts",
             "linked/sub/../../x.ts"]
    assert [real_path(p) for p in paths] == [os.path.realpath(p) for p in paths]


_REFERENCE = st.lists(st.sampled_from(list("ab./?&=_-~+é%#:") + ["//", "..", " ", "\t", "seg.ts"]), max_size=10)
_BASES = ["rec/index.m3u8", "/abs/rec/i.m3u8", "i.m3u8", "./i.m3u8", "/i.m3u8", "a/../b/i.m3u8", "../i.m3u8"]


@settings(max_examples=500, deadline=None)
@given(ref=_REFERENCE.map("".join), base=st.sampled_from(_BASES))
def test_the_quick_path_of_resolve_agrees_with_urllib(ref, base):
    from urllib.parse import unquote, urlsplit

    if _PLAIN_PATH.fullmatch(ref) and "\0" not in ref:
        general = os.path.normpath(os.path.join(os.path.dirname(base), unquote(urlsplit(ref).path)))
        assert resolve(base, ref) == general


_LINES = st.sampled_from([
    "#EXTINF:2.000,", "#EXTINF:2", "#EXTINF:4.5,title, with a comma", '#EXTINF:-1 tvg-id="x",Ch 1', "#EXTINF:,",
    "#EXTINF:abc,", "#EXTINF", "#EXTINF:1e400,", "#EXTINF:nan,", "#EXTINF: 3 ,", "  #EXTINF:3,\t",
    "seg0.ts", "seg1.ts?app=live", "sub/seg2.ts", "../up.ts", "https://cdn.example/s3.ts", "  seg4.ts  ", "\tseg0.ts",
    "data:,x", "#EXT-X-I-FRAMES-ONLY",
    '#EXT-X-KEY:METHOD=AES-128,URI="k1.key"', '#EXT-X-KEY:METHOD=AES-128,URI="https://kms/get?key_id=ab12",IV=0x1F',
    '#EXT-X-KEY:METHOD=AES-128,URI="k2.key",KEYFORMAT="com.apple.streamingkeydelivery"', "#EXT-X-KEY:METHOD=NONE",
    '#EXT-X-MAP:URI="init.mp4"', '#EXT-X-MAP:URI="init.mp4",BYTERANGE="100@0"', "#EXT-X-MAP:", "#EXT-X-MAP:,",
    "#EXT-X-BYTERANGE:188@0",
    "#EXT-X-BYTERANGE:188", "#EXT-X-DISCONTINUITY", "#EXT-X-GAP", "#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00Z",
    "#EXT-X-MEDIA-SEQUENCE:7", "#EXT-X-ENDLIST", "", "# a comment", "#EXT-X-STREAM-INF:BANDWIDTH=1000",
    '#EXT-X-PART:DURATION=1,URI="p.ts"', "#EXT-X-CUE-OUT:30", "#EXT-X-TARGETDURATION:2.5",
])


def _parsed_or_error(text: str, plain_segments: bool) -> object:
    try:
        return parse(text, "rec/index.m3u8", plain_segments=plain_segments)
    except Exception as exc:  # the same error either way, or the same plan
        return type(exc), str(exc)


@settings(max_examples=600, deadline=None)
@given(lines=st.lists(_LINES, max_size=14))
def test_plain_segments_parse_as_the_library_makes_them(lines):
    """The parser makes plain segments (an EXTINF line, then its URI) itself, at a tenth of the
    library's cost: any playlist must give the same plan, or the same error, both ways."""
    text = "\n".join(["#EXTM3U", *lines])
    assert _parsed_or_error(text, True) == _parsed_or_error(text, False)


@pytest.mark.parametrize("playlist", sorted(FIXTURES.rglob("*.m3u8")), ids=lambda p: str(p.relative_to(FIXTURES)))
def test_every_fixture_parses_the_same_with_plain_segments_made_by_the_parser(playlist):
    text = playlist.read_text()
    made = parse(text, str(playlist))
    assert made == parse(text, str(playlist), plain_segments=False)
    assert getattr(made, "parts", None) or getattr(made, "variants", None)


def test_the_writer_is_done_with_a_chunk_before_its_buffer_comes_round_again_though_short_ones_were_batched():
    """A part's short last chunk is copied into a batch and takes no place in the writer's queue: the
    caller's reused buffers (``depth + 2`` of them, in turn) must still never be refilled while the
    writer thread is writing one. Here the first write is held until the caller has either gone
    round its buffers or waits for the writer; every byte must come out as it was handed over."""
    from hlsdecrypt.fetch import Scratch
    from hlsdecrypt.output import BackgroundWriter

    release, went_round = threading.Event(), threading.Event()
    written = bytearray()

    class HeldFile:
        def write(self, data) -> None:
            release.wait()
            written.extend(data)  # what the buffer holds now, as a system call would copy it

    depth, batch = 4, 100
    writer = BackgroundWriter(HeldFile(), depth, batch=batch, linger=3600)  # type: ignore[arg-type]
    scratch = Scratch(depth + 2)
    sizes = [batch, 10, batch, batch, batch, batch, batch, batch]  # the 7th comes round to the 1st's buffer
    expected = bytearray()

    def caller() -> None:
        for n, size in enumerate(sizes):
            if n == depth + 2:
                went_round.set()
            view = scratch.view(size)
            view[:] = bytes([n + 1]) * size
            expected.extend(view)
            writer.write(view)

    thread = threading.Thread(target=caller)
    thread.start()
    for _ in range(10_000):  # until the caller has gone round, or waits for the writer (with the fix)
        if went_round.is_set() or getattr(writer, "_waiting", False) or not thread.is_alive():
            break
        threading.Event().wait(0.001)
    release.set()
    thread.join()
    writer.close()
    assert bytes(written) == bytes(expected)
