"""Live streams: decrypt --follow and verify --follow against a loopback channel on a fast clock.

The channel (``live_origin``) publishes ffmpeg-made segments, encrypted by pycryptodome the way
the live service encrypts them, every 50 ms, in a sliding window, with keys rotating every 4
segments and served by the fake API, which answers ResourceNotFound when a key is first asked
for. Outputs are compared byte for byte with the clear segments they cover. No test measures
time: faults are placed by sequence number, and bounds are generous.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from conftest import FIXTURES
from fake_volc import AK, SK, FakeLiveApi, with_api_credentials
from live_origin import LateKeys, LiveOrigin, key_id

from hlsdecrypt.api import ApiKeySource
from hlsdecrypt.credentials import Credentials
from hlsdecrypt.errors import KeyUnavailable, UsageError
from hlsdecrypt.live import ENDED, Runner, Sequencer, follow, parse_duration, program_dates, target_duration
from hlsdecrypt.keys import KeyChain
from hlsdecrypt.playlist import parse
from hlsdecrypt.ratelimit import RateLimiter
from hlsdecrypt.retry import Backoff
from hlsdecrypt.verification import CHECKS, LIVE_CHECKS, verify_live

PERIOD = 0.05  # one segment every 50 ms; EXTINF and EXT-X-TARGETDURATION say so too
SCHEMA = json.loads(resources.files("hlsdecrypt").joinpath("verify-report.schema.json").read_text())


@pytest.fixture(autouse=True)
def api_env(monkeypatch, tmp_path):
    with_api_credentials(monkeypatch, tmp_path)


@pytest.fixture
def late_keys() -> LateKeys:
    """Every key answers ResourceNotFound for 50 ms after it is first asked for."""
    return LateKeys(delay=0.05)


@pytest.fixture
def api(late_keys):
    with FakeLiveApi(late_keys, rate=50) as fake:
        yield fake


@pytest.fixture
def chain(api, tmp_path):
    """Keys from the fake API only, with quick retries (the test of the default ones is test_api's)."""
    source = ApiKeySource(Credentials(AK, SK, "test"), endpoint=api.url, rate=api.rate, timeout=5,
                          backoff=Backoff(attempts=4, base=0.05, cap=0.2, rng=random.Random(0)),
                          limiter=RateLimiter(api.rate, "acct", directory=tmp_path / "rl"))
    with KeyChain([source], stop_after_failure=False) as keys:
        yield keys


def channel(late_keys: LateKeys, **faults) -> LiveOrigin:
    return LiveOrigin(period=PERIOD, window=60, rotate=4, keys=late_keys, **faults)


def clear_of(origin: LiveOrigin, sequences) -> bytes:
    return b"".join(origin.clear(s) for s in sequences)


def keys_file(origin: LiveOrigin, tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps(origin.keys_json()))
    return path


# -- decrypt --follow ---------------------------------------------------------------------

def test_follow_to_endlist_writes_each_segment_once_byte_identical(late_keys, api, chain, tmp_path):
    with channel(late_keys, end_at=1014, discontinuity_at={1006}) as origin:
        result = follow(origin.playlist_url, tmp_path / "live.ts", keys=chain)
    assert result.stopped == ENDED and result.complete
    assert (result.first_sequence, result.last_sequence, result.segments) == (1000, 1014, 15)
    assert (tmp_path / "live.ts").read_bytes() == clear_of(origin, range(1000, 1015))
    assert all(origin.hits[s] == 1 for s in range(1000, 1015))  # each fetched once, whatever the reloads
    assert result.keys == 4 and set(api.asked) == {key_id(i) for i in range(4)}
    assert all(api.asked.count(key_id(i)) >= 2 for i in range(4))  # ResourceNotFound first, then the key
    assert api.too_fast == 0 and api.bad_signatures == 0
    assert any("segment 1006" in e and "discontinuity" in e for e in result.events)


def test_duration_is_media_time_and_stops_the_follow(late_keys, chain, tmp_path):
    with channel(late_keys) as origin:
        result = follow(origin.playlist_url, tmp_path / "live.ts", keys=chain, duration=10 * PERIOD)
    assert result.stopped.startswith("0.5 s of media written") and result.segments == 10
    assert (tmp_path / "live.ts").read_bytes() == clear_of(origin, range(1000, 1010))


def test_a_jump_in_media_sequence_is_a_listed_gap_and_the_rest_is_written(late_keys, chain, tmp_path):
    with channel(late_keys, skip_at={1006: 4}, end_at=1013) as origin:
        result = follow(origin.playlist_url, tmp_path / "live.ts", keys=chain)
    assert result.missing == 4 and not result.complete
    assert result.gaps == ("segments 1006-1009: left the window before they could be fetched "
                           "(the media sequence jumped from 1005 to 1010)",)
    assert (tmp_path / "live.ts").read_bytes() == clear_of(origin, [*range(1000, 1006), *range(1010, 1014)])


def test_a_playlist_that_goes_back_is_reported_and_nothing_is_written_twice(late_keys, chain, tmp_path):
    with channel(late_keys, back_at={1006: 3}, end_at=1012) as origin:
        result = follow(origin.playlist_url, tmp_path / "live.ts", keys=chain)
    assert origin.stale_served == 1
    assert any("the playlist went back" in e for e in result.events)
    assert (tmp_path / "live.ts").read_bytes() == clear_of(origin, range(1000, 1013))
    assert all(origin.hits[s] == 1 for s in range(1000, 1013))


def test_a_key_the_api_does_not_know_yet_is_asked_for_again(late_keys, api, chain, tmp_path):
    late_keys.delays[key_id(1)] = 0.6  # longer than the API client's own retries of ResourceNotFound
    with channel(late_keys, end_at=1011) as origin:
        result = follow(origin.playlist_url, tmp_path / "live.ts", keys=chain, key_patience=5)
    assert result.complete and (tmp_path / "live.ts").read_bytes() == clear_of(origin, range(1000, 1012))
    assert api.asked.count(key_id(1)) > 3


def test_a_key_that_never_comes_fails_and_keeps_what_was_written(late_keys, chain, tmp_path):
    late_keys.delays[key_id(1)] = 3600
    with channel(late_keys, end_at=1011) as origin:
        with pytest.raises(KeyUnavailable, match=f"KeyID {key_id(1)}.*ResourceNotFound"):
            follow(origin.playlist_url, tmp_path / "live.ts", keys=chain, key_patience=0.3)
    assert (tmp_path / "live.ts").read_bytes() == clear_of(origin, range(1000, 1004))  # the first key's segments


def test_following_a_finished_local_recording_writes_it_whole(run, tmp_path):
    live = FIXTURES / "live_rotation"
    code, err = run("decrypt", live / "index.m3u8", "--follow", "-o", tmp_path / "out.ts", "--keys",
                    live / "keys.json", "--key-source", "none")
    assert code == 0 and "stopped: the playlist ended (EXT-X-ENDLIST); wrote 6 segments (107326-107331)" in err
    assert (tmp_path / "out.ts").read_bytes() == (live / "clear.ts").read_bytes()


@pytest.mark.parametrize("skip_missing", [False, True])
def test_cli_gaps_exit_5_unless_skip_missing(run, late_keys, tmp_path, skip_missing):
    with channel(late_keys, skip_at={1005: 2}, end_at=1009) as origin:
        code, err = run("decrypt", origin.playlist_url, "--follow", "-o", tmp_path / "live.ts", "--keys",
                        keys_file(origin, tmp_path), "--key-source", "none",
                        *(["--skip-missing"] if skip_missing else []))
    assert code == (0 if skip_missing else 5), err
    assert "2 segments missing" in err and "segments 1005-1006: left the window" in err
    assert "stopped: the playlist ended (EXT-X-ENDLIST); wrote 8 segments (1000-1009)" in err
    assert (tmp_path / "live.ts").read_bytes() == clear_of(origin, [*range(1000, 1005), *range(1007, 1010)])


@pytest.mark.parametrize("argv, message", [
    (["--duration", "1h"], "--duration goes with --follow"),
    (["--follow", "--duration", "soon"], "argument --duration: 'soon': want a time such as 2h"),
    (["--follow", "--batch", "jobs.txt"], "--follow follows one stream"),
])
def test_cli_follow_usage_errors(run, capsys, tmp_path, argv, message):
    try:
        code, err = run("decrypt", "http://127.0.0.1:9/live.m3u8", "-o", tmp_path / "out.ts", *argv)
    except SystemExit as exc:  # argparse refuses what its types cannot read, before main() runs
        code, err = exc.code, capsys.readouterr().err
    assert code == 2 and message in err


def _cli(url: str, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hlsdecrypt", "decrypt", url, "--follow", "-o", str(out),
                             "--key-source", "none", *extra], stderr=subprocess.PIPE, text=True)


def _poll(condition, timeout: float = 30.0) -> None:
    """Wait for ``condition``: a bound against hanging for ever, not a measurement of speed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still not so after {timeout:g} s")
        time.sleep(0.02)


def test_sigterm_is_a_normal_stop_that_keeps_the_file_so_far(late_keys, tmp_path):
    out = tmp_path / "live.ts"
    with channel(late_keys) as origin:
        proc = _cli(origin.playlist_url, out, "--keys", str(keys_file(origin, tmp_path)))
        some = len(clear_of(origin, range(1000, 1003)))
        _poll(lambda: any(f.stat().st_size >= some for f in tmp_path.glob(".live.ts.*.part"))
              or proc.poll() is not None)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped: interrupted (Ctrl-C or SIGTERM); wrote" in err, err
    written = out.read_bytes()
    count = next(n for n in range(len(origin.published) + 1)
                 if len(clear_of(origin, range(1000, 1000 + n))) >= len(written))
    assert count >= 3 and written == clear_of(origin, range(1000, 1000 + count)), err  # whole segments, in order


def _journaled(out: Path) -> dict:
    try:
        return json.loads((out.parent / f".{out.name}.part.json").read_text())
    except (OSError, ValueError):
        return {}


def test_resume_continues_a_killed_follow_where_it_stopped(late_keys, tmp_path):
    out = tmp_path / "live.ts"
    with channel(late_keys) as origin:  # no end until the first run is killed: it cannot finish first
        keys = str(keys_file(origin, tmp_path))
        first = _cli(origin.playlist_url, out, "--keys", keys, "--resume", "--jobs", "1")
        _poll(lambda: _journaled(out).get("parts", 0) >= 3)
        first.kill()
        first.wait(timeout=30)
        stopped_at = _journaled(out)["state"]["sequence"]
        assert not out.exists()
        last = origin.end_after(5)
        second = _cli(origin.playlist_url, out, "--keys", keys, "--resume")
        _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert f"resuming after segment {stopped_at}" in err
    assert out.read_bytes() == clear_of(origin, range(1000, last + 1))
    assert all(origin.hits[s] == 1 for s in range(1000, stopped_at + 1))  # what was written is not fetched again


# -- verify --follow ----------------------------------------------------------------------

def watch(origin: LiveOrigin, chain: KeyChain, **kwargs):
    kwargs.setdefault("key_within", 5.0)  # the key-fetch-time test sets its own
    report = verify_live(origin.playlist_url, 0.7, keys=chain, **kwargs)
    jsonschema.validate(report.as_json(), SCHEMA)
    return report, {c.name: c.status for c in report.checks}


def test_verify_follow_passes_a_clean_channel(late_keys, chain):
    with channel(late_keys) as origin:
        report, statuses = watch(origin, chain, expect_rotation_seconds=4 * PERIOD)
    assert list(statuses) == [name for name, _ in CHECKS + LIVE_CHECKS]
    assert {name for name, status in statuses.items() if status not in ("pass", "warn", "skip")} == set()
    assert statuses["iv-reuse"] == "warn" and statuses["reference"] == "skip"  # the live service's zero IV
    assert statuses["key-rotation"] == "pass" and "complete key period" in report.check("key-rotation").summary
    assert report.passed and report.segments >= 10 and report.follow["stopped"] == "watched for 0.7 s"


FAULTS = {
    "stall": ({"stall_at": {1008: 1.0}}, {}, "stalls", "no new segment for"),
    "skip": ({"skip_at": {1008: 3}}, {}, "segments-lost", "segments 1008-1010: left the window"),
    "clear": ({"clear_at": {1009}}, {}, "coverage", "segment 1009 (line"),
    "period": ({}, {"expect_rotation_seconds": 8 * PERIOD}, "key-rotation", "segments 1004-1007, 0.2 s"),
    "late-key": ({}, {"key_within": 0.3}, "key-fetch-time", f"KeyID {key_id(2)} (line"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_verify_follow_catches_each_fault(late_keys, chain, fault):
    channel_faults, options, check, evidence = FAULTS[fault]
    if fault == "late-key":
        late_keys.delays[key_id(2)] = 0.5
    with channel(late_keys, **channel_faults) as origin:
        report, statuses = watch(origin, chain, **options)
    assert {name for name, status in statuses.items() if status == "fail"} == {check}, report.table()
    assert any(evidence in item for item in report.check(check).evidence), report.table()


def test_cli_verify_follow_writes_a_valid_json_report(run, late_keys, tmp_path):
    with channel(late_keys, clear_at={1006}) as origin:
        code, err = run("verify", origin.playlist_url, "--follow", "0.6s", "--keys", keys_file(origin, tmp_path),
                        "--key-source", "none", "--expect-rotation", "0.2s", "--json", tmp_path / "report.json")
    document = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(document, SCHEMA)
    assert code == 6 and document["result"] == "fail"
    assert document["expect_rotation_seconds"] == 0.2 and document["follow"]["duration"] == 0.6
    assert [c["name"] for c in document["checks"]][-3:] == ["segments-lost", "stalls", "key-fetch-time"]


@pytest.mark.parametrize("period, status", [("2s", "pass"), ("5s", "fail")])
def test_expect_rotation_in_seconds_judges_a_recording_by_durations(run, tmp_path, period, status):
    live = FIXTURES / "live_rotation"
    code, _ = run("verify", live / "index.m3u8", "--keys", live / "keys.json", "--expect-rotation", period,
                  "--json", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    jsonschema.validate(report, SCHEMA)
    assert {c["name"]: c["status"] for c in report["checks"]}["key-rotation"] == status
    assert code == (0 if status == "pass" else 6) and report["expect_rotation_seconds"] == float(period[:-1])


# -- the pieces ---------------------------------------------------------------------------

def _playlist(first: int, count: int, *, map_uri: str | None = None, discontinuity_at: int | None = None,
              ended: bool = False):
    lines = ["#EXTM3U", "#EXT-X-TARGETDURATION:2", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    if map_uri:
        lines.append(f'#EXT-X-MAP:URI="{map_uri}"')
    for s in range(first, first + count):
        if s == discontinuity_at:
            lines.append("#EXT-X-DISCONTINUITY")
        if s == first:
            lines.append("#EXT-X-PROGRAM-DATE-TIME:2024-05-07T17:59:02.000+08:00")
        lines += ["#EXTINF:2.0,", f"seg{s}.ts?sig={random.random()}"]  # signatures change between reloads
    if ended:
        lines.append("#EXT-X-ENDLIST")
    text = "\n".join(lines) + "\n"
    return parse(text, "https://example.com/live/index.m3u8"), text


def test_sequencer_takes_each_segment_once_and_lists_jumps():
    seq = Sequencer()
    batch = seq.take(_playlist(10, 3)[0])
    assert [p.sequence for p in batch.new] == [10, 11, 12] and batch.lost is None
    assert seq.take(_playlist(11, 3)[0]).new[0].sequence == 13  # only what is new
    assert seq.take(_playlist(11, 3)[0]).new == ()  # nothing new: nothing taken
    jumped = seq.take(_playlist(20, 2)[0])
    assert jumped.lost == (14, 19) and [p.sequence for p in jumped.new] == [20, 21]
    back = seq.take(_playlist(15, 3)[0])
    assert back.new == () and [kind for kind, _ in back.notes] == ["went-back", "went-back"]
    assert seq.take(_playlist(15, 3)[0]).notes == ()  # said once while it stays behind
    assert [p.sequence for p in seq.take(_playlist(21, 3, discontinuity_at=22)[0]).new] == [22, 23]


def test_sequencer_writes_an_init_section_only_when_it_changes_and_resumes_after_a_sequence():
    seq = Sequencer()
    assert [p.is_init for p in seq.take(_playlist(1, 2, map_uri="init.mp4?sig=a")[0]).new] == [True, False, False]
    assert [p.is_init for p in seq.take(_playlist(2, 2, map_uri="init.mp4?sig=b")[0]).new] == [False]
    assert [p.is_init for p in seq.take(_playlist(3, 2, map_uri="init2.mp4")[0]).new] == [True, False]
    resumed = Sequencer(after=11, init=None)
    assert [p.sequence for p in resumed.take(_playlist(10, 4)[0]).new] == [12, 13]


def test_target_duration_and_program_dates_are_read_from_the_text():
    playlist, text = _playlist(5, 3)
    assert target_duration(text, playlist) == 2.0
    dates = program_dates(text, playlist)
    assert [dates[s] - dates[5] for s in (5, 6, 7)] == [0.0, 2.0, 4.0]  # carried on by durations
    assert target_duration(text.replace("#EXT-X-TARGETDURATION:2", ""), playlist) == 2.0  # the longest segment
    # 400 nines read as inf: no reload may wait that long, and no JSON report may carry it
    assert target_duration(text.replace("TARGETDURATION:2", "TARGETDURATION:" + "9" * 400), playlist) == 2.0


@pytest.mark.parametrize("text, seconds", [("2h", 7200), ("90m", 5400), ("1h30m", 5400), ("45s", 45), ("1.5", 1.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0", "1d", "-5"])
def test_bad_durations(text):
    with pytest.raises(UsageError):
        parse_duration(text)


def test_waiting_segments_that_left_the_window_are_dropped_unfetched():
    gate = threading.Event()
    runner = Runner(lambda part: gate.wait(30) and part.sequence, jobs=1, ahead=1)
    try:
        runner.add(_playlist(10, 5)[0].parts)  # 10 in flight, 11-14 waiting
        assert runner.left_window(13) == [(11, 12)]
        gate.set()
        got: list[int] = []
        _poll(lambda: got.extend(s for _, s in runner.ready()) or len(got) == 3)
        assert got == [10, 13, 14] and runner.idle
    finally:
        runner.close()
