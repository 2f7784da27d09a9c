"""The edges: nothing destroyed, ordinary failures said plainly, hostile servers and paths contained."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import FIXTURES, sha256
from fake_volc import AK, SK, FakeLiveApi
from servers import HostileServer, StaticServer

from hlsdecrypt.crypto import DataKey
from hlsdecrypt.keystore import KeyCache
from hlsdecrypt.playlist import KeyRef

IMPLICIT = FIXTURES / "implicit_iv/index.m3u8"
CLEAR = FIXTURES / "implicit_iv/clear.ts"
LIVE = FIXTURES / "live_rotation"
LIVE_KEYS = json.loads((LIVE / "keys.json").read_text())


@pytest.fixture(autouse=True)
def private_home(monkeypatch, tmp_path):
    """No real credentials or caches: each test sees only what it sets up."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("VOLC_ACCESSKEY", "VOLC_SECRETKEY", "HLSDECRYPT_API_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)


def _cli(*argv: object, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hlsdecrypt", *map(str, argv)], stderr=subprocess.PIPE,
                            text=True, **kwargs)


# -- 2. outputs never destroy anything ---------------------------------------------------

def test_a_device_output_is_written_in_place_not_replaced(run):
    code, err = run("decrypt", IMPLICIT, "-o", "/dev/null")
    assert code == 0, err
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_fifo_output_is_written_in_place_and_its_reader_gets_every_byte(run, tmp_path):
    fifo = tmp_path / "player"
    os.mkfifo(fifo)
    got = bytearray()

    def reader() -> None:
        with open(fifo, "rb") as f:
            got.extend(f.read())

    thread = threading.Thread(target=reader)
    thread.start()
    code, err = run("decrypt", IMPLICIT, "-o", fifo)
    thread.join(timeout=30)
    assert code == 0, err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert bytes(got) == CLEAR.read_bytes()


@pytest.mark.parametrize("which", ["playlist", "segment", "keys file", "key cache"])
def test_an_output_that_names_an_input_is_refused_and_the_input_kept(run, fixtures, tmp_path, which):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"key.bin": (fixtures / "implicit_iv/key.bin").read_bytes().hex()}))
    cache = tmp_path / "cache.json"
    cache.write_text("{}")
    victim = {"playlist": fixtures / "implicit_iv/index.m3u8", "segment": fixtures / "implicit_iv/seg3.ts",
              "keys file": keys, "key cache": cache}[which]
    before = victim.read_bytes()
    code, err = run("decrypt", fixtures / "implicit_iv/index.m3u8", "-o", victim, "--force", "--keys", keys,
                    "--key-cache", cache)
    assert code == 7, err
    assert "is an input of this run" in err
    assert victim.read_bytes() == before


def test_an_output_named_like_a_segment_missing_now_is_refused(run, fixtures, tmp_path):
    """Segments are compared with a new output by name: one that comes during the run (a recorder
    still writing the folder) must not be replaced by the output, --force or not."""
    (fixtures / "clear/seg5.ts").unlink()
    code, err = run("decrypt", fixtures / "clear/index.m3u8", "-o", fixtures / "clear/seg5.ts", "--skip-missing",
                    "--force")
    assert code == 7, err
    assert "is an input of this run" in err
    assert not (fixtures / "clear/seg5.ts").exists()


def test_a_segment_named_like_the_outputs_temporary_file_is_refused_and_kept(run, fixtures, tmp_path):
    """``--resume`` writes ``.NAME.part`` beside the output, and a run removes such files that
    crashed runs left: a segment of that name would be deleted, and the output read in its place."""
    folder = fixtures / "clear"
    (folder / "seg5.ts").rename(folder / ".out.ts.part")
    playlist = folder / "index.m3u8"
    playlist.write_text(playlist.read_text().replace("\nseg5.ts", "\n.out.ts.part"))
    before = (folder / ".out.ts.part").read_bytes()
    code, err = run("decrypt", playlist, "-o", folder / "out.ts", "--resume")
    assert code == 7, err
    assert "named like the files made beside the output" in err
    assert (folder / ".out.ts.part").read_bytes() == before and not (folder / "out.ts").exists()


def test_an_output_that_is_a_link_still_keeps_a_segment_named_like_its_temporary_file(run, fixtures, tmp_path):
    """The temporary file is named after the output as given (a link's own name), not after what
    the link points to: the check must use the same name."""
    folder = fixtures / "clear"
    (folder / "seg5.ts").rename(folder / ".out.ts.x.part")
    playlist = folder / "index.m3u8"
    playlist.write_text(playlist.read_text().replace("\nseg5.ts", "\n.out.ts.x.part"))
    (folder / "out.ts").symlink_to("nowhere.ts")
    before = (folder / ".out.ts.x.part").read_bytes()
    code, err = run("decrypt", playlist, "-o", folder / "out.ts", "--force")
    assert code == 7, err
    assert (folder / ".out.ts.x.part").read_bytes() == before


def test_an_output_through_a_link_and_dot_dot_is_checked_where_it_is_written(run, fixtures, tmp_path):
    """``link/../seg0.ts`` is written as the text says (beside ``link``), where the kernel would
    look behind the link: the check must look where the file is written, and refuse the segment."""
    folder = fixtures / "clear"
    (tmp_path / "other/sub").mkdir(parents=True)
    (folder / "link").symlink_to(tmp_path / "other/sub")
    before = (folder / "seg0.ts").read_bytes()
    code, err = run("decrypt", folder / "index.m3u8", "-o", f"{folder}/link/../seg0.ts", "--force")
    assert code == 7, err
    assert "is an input of this run" in err
    assert (folder / "seg0.ts").read_bytes() == before


def test_an_output_named_like_a_key_cache_still_to_be_made_is_refused(run, fixtures, tmp_path):
    """Existing inputs are told apart by file identity; the key cache may not exist yet, and is
    then compared by its path, through a link to the output's folder too."""
    (tmp_path / "via").symlink_to(tmp_path)
    code, err = run("decrypt", IMPLICIT, "-o", tmp_path / "out.ts", "--key-cache", tmp_path / "via/out.ts")
    assert code == 7, err
    assert "is an input of this run" in err
    assert not (tmp_path / "out.ts").exists()


def test_two_sources_that_would_share_an_output_name_are_refused_before_any_work(run, fixtures, tmp_path):
    for side in ("a", "b"):
        (fixtures / side).mkdir()
        os.symlink(fixtures / "implicit_iv", fixtures / side / "rec")
    out = tmp_path / "out"
    out.mkdir()
    code, err = run("decrypt", fixtures / "a/rec/index.m3u8", fixtures / "b/rec/index.m3u8", "-o", out)
    assert code == 2
    assert "would both be written to" in err and "--batch" in err
    assert list(out.iterdir()) == []


def test_batch_with_o_is_a_usage_error(run, tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_text(f"{IMPLICIT} {tmp_path / 'a.ts'}\n")
    code, err = run("decrypt", "--batch", batch, "-o", tmp_path / "x.ts")
    assert code == 2 and "-o has no meaning" in err
    assert not (tmp_path / "x.ts").exists() and not (tmp_path / "a.ts").exists()


def test_an_existing_output_is_kept_unless_forced(run, tmp_path):
    out = tmp_path / "out.ts"
    out.write_bytes(b"last week's work")
    code, err = run("decrypt", IMPLICIT, "-o", out)
    assert code == 7 and "exists (--force replaces it)" in err
    assert out.read_bytes() == b"last week's work"
    code, err = run("decrypt", IMPLICIT, "-o", out, "--force")
    assert code == 0, err
    assert sha256(out) == sha256(CLEAR)


def test_a_batch_run_again_skips_what_is_done_and_finishes_the_rest(run, tmp_path):
    done, todo = tmp_path / "done.ts", tmp_path / "todo.ts"
    done.write_bytes(b"finished earlier")
    batch = tmp_path / "batch.txt"
    batch.write_text(f"{IMPLICIT} {done}\n{FIXTURES / 'explicit_iv/index.m3u8'} {todo}\n")
    code, err = run("decrypt", "--batch", batch)
    assert code == 0, err
    assert "skipped" in err and "1 of 2 streams decrypted, 1 skipped (output exists)" in err
    assert done.read_bytes() == b"finished earlier"
    assert sha256(todo) == sha256(FIXTURES / "explicit_iv/clear.ts")


def test_a_killed_runs_temporary_file_is_removed_by_the_next_run(run, tmp_path):
    stale = tmp_path / ".out.ts.k9x2ab.part"
    stale.write_bytes(b"half of something")
    code, err = run("decrypt", IMPLICIT, "-o", tmp_path / "out.ts")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ts"]


def test_a_temporary_file_a_live_run_holds_is_left_alone_and_the_clash_said(run, tmp_path):
    busy = tmp_path / ".out.ts.live01.part"
    with open(busy, "wb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a run in progress writes out.ts
        for extra in ((), ("--resume",)):
            code, err = run("decrypt", IMPLICIT, "-o", tmp_path / "out.ts", *extra)
            assert code == 7 and "another hlsdecrypt is writing it now" in err
        assert busy.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.ts.live01.part"]


# -- 3. ordinary failures are not bugs ---------------------------------------------------

@pytest.mark.parametrize("output, message", [
    ("missing/out.ts", "no such folder"),
    ("/proc/out.ts", "cannot write in /proc"),
])
def test_an_output_that_cannot_be_made_is_said_before_any_work(run, tmp_path, output, message):
    target = tmp_path / output if not output.startswith("/") else Path(output)
    code, err = run("decrypt", IMPLICIT, "-o", target)
    assert code == 7, err
    assert message in err and "unexpected" not in err
    assert len(err.strip().splitlines()) == 1


def test_an_output_folder_receives_a_file_named_after_the_stream(run, tmp_path):
    code, err = run("decrypt", IMPLICIT, "-o", tmp_path)
    assert code == 0, err
    assert sha256(tmp_path / "implicit_iv.ts") == sha256(CLEAR)


def test_a_full_disk_is_an_output_error(run):
    code, err = run("decrypt", IMPLICIT, "-o", "/dev/full")
    assert code == 7
    assert "/dev/full: No space left on device" in err and "unexpected" not in err


def test_a_closed_pipe_on_stdout_ends_quietly_as_cat_does():
    head = subprocess.Popen(["head", "-c", "100"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc = _cli("decrypt", FIXTURES / "explicit_iv/index.m3u8", "-o", "-", stdout=head.stdin)
    head.stdin.close()
    assert len(head.stdout.read()) == 100
    head.wait()
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == ""


@pytest.mark.parametrize("option", ["--json", "--junit"])
def test_a_report_into_a_missing_folder_is_refused_before_the_work(run, tmp_path, option):
    code, err = run("verify", IMPLICIT, option, tmp_path / "missing/report")
    assert code == 2 and "no such folder" in err


def test_keys_export_and_key_cache_into_a_missing_folder_are_refused(run, tmp_path):
    code, err = run("keys", IMPLICIT, "--export", tmp_path / "missing/keys.json")
    assert code == 2 and "no such folder" in err
    code, err = run("decrypt", IMPLICIT, "-o", tmp_path / "out.ts", "--key-cache", tmp_path / "missing/c.json")
    assert code == 2 and "no such folder" in err
    assert not (tmp_path / "out.ts").exists()


def test_a_credentials_file_that_is_not_utf8_is_a_usage_error(run, tmp_path):
    creds = tmp_path / "creds"
    creds.write_bytes(b"[default]\naccess_key_id = \xff\xfe\n")
    code, err = run("decrypt", IMPLICIT, "-o", tmp_path / "out.ts", "--credentials", creds)
    assert code == 2 and "not UTF-8" in err


def test_a_symlink_at_the_journals_new_path_is_replaced_not_followed(run, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.symlink(victim, tmp_path / ".out.ts.part.json.new")
    code, err = run("decrypt", IMPLICIT, "-o", tmp_path / "out.ts", "--resume")
    assert code == 0, err
    assert victim.read_text() == "precious"
    assert sha256(tmp_path / "out.ts") == sha256(CLEAR)


_INTERRUPTED_IMPORT = """
import sys
class Interrupting:  # Ctrl-C arrives while the command's modules load
    def find_spec(self, name, path=None, target=None):
        if name == "hlsdecrypt.cli":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Interrupting())
sys.argv = ["hlsdecrypt", "--version"]
from hlsdecrypt.__main__ import run
run()
"""


def test_ctrl_c_during_start_up_prints_no_traceback():
    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_IMPORT], capture_output=True, text=True)
    assert done.returncode == 130
    assert done.stderr == "hlsdecrypt: interrupted\n"


@pytest.mark.parametrize("where", ["segment", "key", "variant"])
@pytest.mark.parametrize("nul", ["%00", "\0"])
def test_a_nul_byte_in_a_uri_is_bad_input_naming_its_line(run, fixtures, tmp_path, where, nul):
    if where == "variant":
        playlist = fixtures / "master/index.m3u8"
        text = playlist.read_text()
        first = next(line for line in text.splitlines() if line and not line.startswith("#"))
        playlist.write_text(text.replace(first, first.replace("/", f"{nul}/", 1), 1))
    else:
        playlist = fixtures / "implicit_iv/index.m3u8"
        text = playlist.read_text()
        old = "seg2.ts" if where == "segment" else 'URI="key.bin"'
        playlist.write_text(text.replace(old, old.replace(".", f"{nul}.")))
    code, err = run("decrypt", playlist, "-o", tmp_path / "out.ts")
    assert code == 3, err
    assert "NUL" in err and "line " in err and "unexpected" not in err
    assert not (tmp_path / "out.ts").exists()


# -- 4. hostile servers cannot exhaust memory or time ------------------------------------

@pytest.fixture
def hostile(fixtures):
    with HostileServer(fixtures) as server:
        yield server


@pytest.mark.parametrize("mode", ["endless", "chunked", "bomb"])
def test_an_endless_or_inflating_playlist_is_cut_at_its_limit(run, hostile, tmp_path, monkeypatch, mode):
    monkeypatch.setattr("hlsdecrypt.fetch.MAX_PLAYLIST", 1 << 20)
    code, err = run("decrypt", f"{hostile.url}/{mode}/index.m3u8", "-o", tmp_path / "out.ts")
    assert code == 3
    assert "allowed" in err and "1 MiB" in err


@pytest.mark.parametrize("mode", ["endless", "chunked", "bomb"])
def test_an_endless_or_inflating_segment_is_cut_at_its_limit(run, hostile, tmp_path, monkeypatch, mode):
    monkeypatch.setattr("hlsdecrypt.fetch.MAX_PART", 1 << 20)
    playlist = tmp_path / "index.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{hostile.url}/{mode}/seg.ts\n#EXT-X-ENDLIST\n")
    code, err = run("decrypt", f"{hostile.url}/implicit_iv/index.m3u8", "-o", tmp_path / "ok.ts")
    assert code == 0, err  # the server's ordinary files are fine
    code, err = run("decrypt", playlist, "-o", tmp_path / "out.ts", "--allow-any-path")
    assert code == 5 and "allowed" in err


def test_a_key_longer_than_a_key_is_not_read_to_its_end(run, hostile, fixtures, tmp_path):
    playlist = fixtures / "implicit_iv/index.m3u8"
    playlist.write_text(playlist.read_text().replace('URI="key.bin"', f'URI="{hostile.url}/bomb/key.bin"'))
    code, err = run("decrypt", playlist, "-o", tmp_path / "out.ts")
    assert code == 4 and "allowed" in err


@pytest.mark.parametrize("mode", ["trickle-headers", "trickle-body"])
def test_a_trickling_playlist_server_meets_the_deadline(run, hostile, tmp_path, mode):
    code, err = run("decrypt", f"{hostile.url}/{mode}/index.m3u8", "-o", tmp_path / "out.ts",
                    "--timeout", "1", "--retries", "0")
    assert code == 3
    assert "no complete answer within 3s" in err  # 3 x --timeout, though no read waited that long


def test_a_trickling_segment_meets_the_deadline(run, hostile, tmp_path):
    playlist = tmp_path / "index.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\n{hostile.url}/trickle-body/s.ts\n"
                        "#EXT-X-ENDLIST\n")
    code, err = run("decrypt", playlist, "-o", tmp_path / "out.ts", "--allow-any-path", "--deadline", "1.5",
                    "--retries", "0")
    assert code == 5 and "no complete answer within 1.5s" in err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_ends_the_run_at_once_while_fetches_hang_on_a_silent_server(hostile, tmp_path, signum):
    playlist = tmp_path / "index.m3u8"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:2\n" + "".join(
        f"#EXTINF:2,\n{hostile.url}/silent/s{i}.ts\n" for i in range(8)) + "#EXT-X-ENDLIST\n")
    proc = _cli("decrypt", playlist, "-o", tmp_path / "out.ts", "--allow-any-path", "--timeout", "60")
    deadline = time.monotonic() + 30
    while hostile.requests["silent"] < 2 and time.monotonic() < deadline:  # the awaited turn and one ahead
        time.sleep(0.05)
    proc.send_signal(signum)
    code = proc.wait(timeout=10)  # not the 60 s the fetches would hang
    assert code == 130
    assert "interrupted" in proc.stderr.read()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".out", "out"))]


# -- 5. local paths stay where they belong -----------------------------------------------

def test_a_segment_linked_to_a_secret_outside_the_folder_is_refused(run, fixtures, tmp_path):
    secret = tmp_path / "credentials"
    secret.write_text("[default]\nsecret_access_key = s3cr3t\n")
    segment = fixtures / "clear/seg3.ts"
    segment.unlink()
    segment.symlink_to(secret)
    code, err = run("decrypt", fixtures / "clear/index.m3u8", "-o", tmp_path / "out.ts")
    assert code == 3 and "outside the playlist's folder" in err
    assert not (tmp_path / "out.ts").exists()


@pytest.mark.parametrize("how", ["segment folder", "key file"])
def test_a_folder_or_key_linked_outside_is_refused_by_the_quick_path_too(run, fixtures, tmp_path, how):
    """Segments are opened in their folder's resolved path: a folder link that leads out of the
    playlist's folder is refused as a linked file is, and so is a key file linked outside."""
    folder, outside = fixtures / "implicit_iv", tmp_path / "outside"
    outside.mkdir()
    if how == "segment folder":
        (folder / "seg1.ts").rename(outside / "seg1.ts")
        (folder / "sub").symlink_to(outside)
        playlist = folder / "index.m3u8"
        playlist.write_text(playlist.read_text().replace("\nseg1.ts", "\nsub/seg1.ts"))
    else:
        (folder / "key.bin").rename(outside / "key.bin")
        (folder / "key.bin").symlink_to(outside / "key.bin")
    code, err = run("decrypt", folder / "index.m3u8", "-o", tmp_path / "out.ts")
    assert code in (3, 4), err
    assert "outside the playlist's folder" in err
    assert not (tmp_path / "out.ts").exists()


def test_an_output_hard_linked_to_an_input_is_refused(run, fixtures, tmp_path):
    """The same file under another name is still the input: replacing it would not destroy the
    input's bytes, but writing over it in place (a --force on a file) is refused all the same."""
    os.link(fixtures / "implicit_iv/seg3.ts", tmp_path / "out.ts")
    before = (fixtures / "implicit_iv/seg3.ts").read_bytes()
    code, err = run("decrypt", fixtures / "implicit_iv/index.m3u8", "-o", tmp_path / "out.ts", "--force")
    assert code == 7, err
    assert "is an input of this run" in err
    assert (fixtures / "implicit_iv/seg3.ts").read_bytes() == before


def test_no_file_stays_open_after_parts_are_abandoned_or_fail(fixtures):
    """Local segments are opened as descriptors: one left open per part would exhaust a long recording's."""
    from hlsdecrypt import Fetcher, key_chain
    from hlsdecrypt.crypto import DataKey
    from hlsdecrypt.errors import DecryptError
    from hlsdecrypt.pipeline import clear_parts, load_stream

    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    fetcher = Fetcher()
    playlist = load_stream(str(fixtures / "implicit_iv/index.m3u8"), fetcher).playlist
    before = open_files()
    with key_chain(fetcher=fetcher, source="uri") as keys:
        for part, chunks in clear_parts(playlist, keys, fetcher):  # the first chunk of each, then on
            next(iter(chunks), None)
        del part, chunks  # the last part, abandoned too
        assert open_files() == before
    wrong = {ref.identity: DataKey(bytes(16)) for ref in playlist.keys}
    with key_chain(fetcher=fetcher, source="none") as keys:
        keys.resolved.update(wrong)
        with pytest.raises(DecryptError):
            for part, chunks in clear_parts(playlist, keys, fetcher):
                for _ in chunks:
                    pass
    assert open_files() == before


def test_segments_and_keys_linked_within_the_folder_are_read(run, fixtures, tmp_path):
    """Files are opened without following a link, which is quick; a link is then resolved and
    checked, and read when it stays inside the playlist's folder."""
    folder = fixtures / "implicit_iv"
    (folder / "store").mkdir()
    for name in ("seg1.ts", "key.bin"):
        (folder / name).rename(folder / "store" / name)
        (folder / name).symlink_to(Path("store") / name)
    code, err = run("decrypt", folder / "index.m3u8", "-o", tmp_path / "out.ts")
    assert code == 0, err
    assert sha256(tmp_path / "out.ts") == sha256(CLEAR)


@pytest.mark.parametrize("what, code", [("segment", 5), ("key", 4)])
def test_a_fifo_as_a_segment_or_key_is_refused_without_hanging(run, fixtures, tmp_path, what, code):
    path = fixtures / ("implicit_iv/seg1.ts" if what == "segment" else "implicit_iv/key.bin")
    path.unlink()
    os.mkfifo(path)
    got, err = run("decrypt", fixtures / "implicit_iv/index.m3u8", "-o", tmp_path / "out.ts")
    assert got == code and "not a regular file" in err


# -- 6. the key cache holds only keys that worked, and loses none ------------------------

def test_a_wrong_key_from_the_api_never_enters_the_cache(run, tmp_path, monkeypatch):
    wrong = {key_id: "00" * 16 for key_id in LIVE_KEYS}
    cache = tmp_path / "cache.json"
    monkeypatch.setenv("VOLC_ACCESSKEY", AK)
    monkeypatch.setenv("VOLC_SECRETKEY", SK)
    with FakeLiveApi(wrong, rate=50) as api:
        code, _ = run("decrypt", LIVE / "index.m3u8", "-o", tmp_path / "out.ts", "--key-source", "api",
                      "--api-endpoint", api.url, "--api-rate", "50", "--key-cache", cache)
    assert code == 5
    assert not cache.exists() or json.loads(cache.read_text()) == {}
    with FakeLiveApi(LIVE_KEYS, rate=50) as api:
        code, err = run("decrypt", LIVE / "index.m3u8", "-o", tmp_path / "out.ts", "--key-source", "api",
                        "--api-endpoint", api.url, "--api-rate", "50", "--key-cache", cache)
    assert code == 0, err
    assert json.loads(cache.read_text()) == LIVE_KEYS


_CACHE_WRITER = """
import sys
from hlsdecrypt.crypto import DataKey
from hlsdecrypt.keystore import KeyCache
from hlsdecrypt.playlist import KeyRef
cache = KeyCache(sys.argv[1])
for n in range(40):
    key_id = f"{sys.argv[2]}-{n}"
    cache.store(KeyRef("k", "k", key_id, None, 1), DataKey(n.to_bytes(16, "big")))
"""


def test_two_processes_sharing_a_key_cache_lose_no_key(tmp_path):
    cache = tmp_path / "cache.json"
    procs = [subprocess.Popen([sys.executable, "-c", _CACHE_WRITER, str(cache), name]) for name in ("a", "b")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    kept = KeyCache(str(cache))
    for name in ("a", "b"):
        for n in range(40):
            assert kept.lookup(KeyRef("k", "k", f"{name}-{n}", None, 1)) == DataKey(n.to_bytes(16, "big"))


# -- 7. messages that say what happened --------------------------------------------------

def test_a_key_id_with_no_access_keys_says_so(run, tmp_path):
    code, err = run("decrypt", LIVE / "index.m3u8", "-o", tmp_path / "out.ts")
    assert code == 4
    assert "no access keys found" in err and "VOLC_ACCESSKEY" in err
    assert "cannot resolve the host name" in err  # and what the key URI did


def test_a_refused_connection_is_named_and_not_retried(run, tmp_path):
    with StaticServer(tmp_path) as server:
        url = server.url
    code, err = run("decrypt", f"{url}/index.m3u8", "-o", tmp_path / "out.ts", "-v")
    assert code == 3
    assert "connection refused" in err and "retrying" not in err


def test_a_closed_api_endpoint_fails_at_once_without_repeating_itself(run, tmp_path, monkeypatch):
    monkeypatch.setenv("VOLC_ACCESSKEY", AK)
    monkeypatch.setenv("VOLC_SECRETKEY", SK)
    with StaticServer(tmp_path) as server:
        url = server.url
    code, err = run("decrypt", LIVE / "index.m3u8", "-o", tmp_path / "out.ts", "--key-source", "api",
                    "--api-endpoint", url)
    assert code == 4
    line = err.strip().splitlines()[-1]
    assert "connection refused" in line and "retrying" not in err
    assert line.count("GetHLSEncryptDataKey") == 1


def test_an_untrusted_certificate_is_named_and_not_retried(run, tmp_path):
    from tls import TlsStaticServer  # a server with a self-signed certificate

    with TlsStaticServer(FIXTURES) as server:
        code, err = run("decrypt", f"{server.url}/implicit_iv/index.m3u8", "-o", tmp_path / "out.ts", "-v")
        assert server.handshakes >= 1
    assert code == 3
    assert "certificate not trusted" in err and "--ca-bundle" in err and "retrying" not in err


def test_counts_are_in_good_english(run, tmp_path):
    code, err = run("decrypt", IMPLICIT, "-o", tmp_path / "out.ts")
    assert code == 0
    assert "1 key " in err and "6 segments" in err


def test_an_interrupt_while_a_file_is_made_waits_until_the_file_is_known():
    from hlsdecrypt import stop

    steps = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with stop.shielded():
                stop.interrupt()  # what the signal handler does, here between creating and naming a file
                steps.append("named")
        assert steps == ["named"] and stop.stopping()
    finally:
        stop.reset()


def test_a_stop_ends_the_run_even_when_the_fifo_it_writes_is_not_read(tmp_path):
    fifo = tmp_path / "player"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a player that opened the pipe, then paused
    try:
        proc = _cli("decrypt", FIXTURES / "byterange/index.m3u8", "-o", fifo, "--key-source", "uri")
        time.sleep(1.0)  # long enough to fill the pipe; the test holds either way
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 130
    finally:
        os.close(reader)


def test_a_summary_is_never_written_over_an_output_or_an_input(run, tmp_path):
    code, err = run("decrypt", IMPLICIT, "-o", tmp_path / "out.ts", "--json-summary", tmp_path / "out.ts")
    assert code == 2 and "--json-summary" in err
    code, err = run("decrypt", IMPLICIT, "-o", tmp_path / "out.ts", "--json-summary", IMPLICIT)
    assert code == 2 and not (tmp_path / "out.ts").exists()


def test_keep_ts_without_remux_is_refused_in_a_batch_too(run, tmp_path):
    batch = tmp_path / "batch.txt"
    batch.write_text(f"{IMPLICIT} {tmp_path / 'a.ts'}\n")
    code, err = run("decrypt", "--batch", batch, "--keep-ts")
    assert code == 2 and "--remux" in err
