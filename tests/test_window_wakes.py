"""The targeted wake-ups of ``fetch.Bodies``: every fetch that waits to ask (outside the request
window) or for room must be woken by the change that lets it go, never let through by the 0.1 s
poll that is there only for a stop.

How: the poll is stretched to 5 s (``fetch.threading`` swapped for one whose Condition turns a
0.1 s wait into 5 s) and every wait that times out is recorded. A correct scheme never times out
(nothing here stops the run); a lost wake-up shows as a recorded time-out (and a run 5 s slower),
whatever the machine's speed: no wall-clock assertion. The check was seen to catch a lost wake-up
with ``_let_ask()`` taken out of ``done()``.

Runs over loopback with many short segments, so that turns do wait outside the window: jobs
2 to 16 against a window of 2 at the wire's speed, EXT-X-GAP parts, 404s skipped or ending the run,
chunked and gzip bodies (the window widened in ``fetched``), and no room ahead (``NoRoom``).
"""

from __future__ import annotations

import hashlib
import threading
import types
from pathlib import Path
from typing import Callable

import pytest

from conftest import FIXTURES
from servers import StaticServer
from test_http_path import OddServer

from hlsdecrypt import fetch, pipeline
from hlsdecrypt.fetch import Abandoned, Bodies

POLL = 0.1  # what Bodies waits between looks at a stop
STRETCHED = 5.0


@pytest.fixture
def timed_out(monkeypatch) -> list[str]:
    """The waits of Bodies that ran out their (stretched) poll instead of being woken."""
    outs: list[str] = []

    class Condition(threading.Condition):
        def wait(self, timeout: float | None = None) -> bool:
            polled = timeout == POLL
            woken = super().wait(STRETCHED if polled else timeout)
            if polled and not woken:
                outs.append(threading.current_thread().name)
            return woken

    monkeypatch.setattr(fetch, "threading", types.SimpleNamespace(RLock=threading.RLock, Condition=Condition))
    return outs


def _site(root: Path, count: int, *, gap_every: int = 0, missing: frozenset[int] = frozenset(),
          where: Callable[[int], str] = lambda i: "") -> str:
    """A playlist of ``count`` clear segments (the clear fixture's, over and over) under ``root``;
    returns the sha256 of what a run writes (gaps and missing segments leave nothing)."""
    root.mkdir(parents=True)
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:1"]
    written = hashlib.sha256()
    for i in range(count):
        data = (FIXTURES / f"clear/seg{i % 6}.ts").read_bytes()
        name = f"s{i}.ts"
        if gap_every and i % gap_every == gap_every - 1:
            lines.append("#EXT-X-GAP")
        elif i not in missing:
            (root / name).write_bytes(data)
            written.update(data)
        lines += ["#EXTINF:1.0,", where(i) + name]
    (root / "index.m3u8").write_text("\n".join(lines + ["#EXT-X-ENDLIST"]) + "\n")
    return written.hexdigest()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _decrypt_site(run: Callable, tmp_path: Path, *options: str) -> tuple[int, str]:
    """``decrypt`` of the site ``_site`` made, served on loopback, into ``out.ts``."""
    with StaticServer(tmp_path / "site", quiet=True) as server:
        return run("decrypt", f"{server.url}/index.m3u8", "-o", tmp_path / "out.ts", *options)


@pytest.mark.parametrize("jobs", ["2", "6", "16"])
def test_turns_outside_the_window_are_woken_as_the_reader_moves_on(run, tmp_path, timed_out, jobs):
    want = _site(tmp_path / "site", 60)
    code, err = _decrypt_site(run, tmp_path, "--jobs", jobs)
    assert code == 0, err
    assert _sha(tmp_path / "out.ts") == want
    assert timed_out == []


def test_gaps_and_skipped_404s_wake_the_turns_behind_them(run, tmp_path, timed_out):
    want = _site(tmp_path / "site", 60, gap_every=4, missing=frozenset({5, 6, 9, 10, 30}))
    code, err = _decrypt_site(run, tmp_path, "--jobs", "6", "--skip-missing", "--retries", "0")
    assert code == 5 and "5 of 60 segments are missing" in err, err
    assert _sha(tmp_path / "out.ts") == want
    assert timed_out == []


def test_a_404_ends_the_run_and_frees_every_turn_waiting_to_ask(run, tmp_path, timed_out):
    _site(tmp_path / "site", 60, missing=frozenset({20}))
    code, err = _decrypt_site(run, tmp_path, "--jobs", "6", "--retries", "0")
    assert code == 5 and "s20.ts: HTTP 404" in err, err
    assert timed_out == []


@pytest.mark.parametrize("mode", ["chunked", "gzip", "mixed"])
def test_bodies_read_in_pieces_widen_the_window_and_wake_the_turns_it_reaches(run, tmp_path, timed_out, mode):
    def where(i: int) -> str:  # "mixed": every third segment chunked, the others read into buffers
        return f"/{'chunked' if mode == 'mixed' and i % 3 == 0 else 'plain' if mode == 'mixed' else mode}/"

    want = _site(tmp_path / "site", 60, where=where)
    with OddServer(tmp_path / "site") as server:
        code, err = run("decrypt", f"{server.url}/plain/index.m3u8", "-o", tmp_path / "out.ts", "--jobs", "6")
    assert code == 0, err
    assert _sha(tmp_path / "out.ts") == want
    assert timed_out == []


@pytest.mark.parametrize("jobs", ["1", "6"])
def test_fetches_with_no_room_ahead_are_woken_as_buffers_come_back(run, tmp_path, monkeypatch, timed_out, jobs):
    monkeypatch.setattr(pipeline, "FETCHED_AHEAD", 1)  # each fetch ahead waits for its turn to be awaited
    monkeypatch.setattr(pipeline, "FETCH_PATIENCE", 0)  # and lets its answer go at once (NoRoom)
    want = _site(tmp_path / "site", 40)
    code, err = _decrypt_site(run, tmp_path, "--jobs", jobs)
    assert code == 0, err
    assert _sha(tmp_path / "out.ts") == want
    assert timed_out == []


def _waiting_to_ask(bodies: Bodies, turn: int, abandoned: list[int] | None = None) -> threading.Thread:
    def ask() -> None:
        try:
            bodies.wait_to_ask(turn)
        except Abandoned:  # closed: what a fetch thread would see
            if abandoned is not None:
                abandoned.append(turn)

    asking = threading.Thread(target=ask, daemon=True)
    asking.start()
    asking.join(0.3)
    assert asking.is_alive()  # outside the window
    return asking


@pytest.mark.parametrize("change", ["done", "fetched in pieces", "close"])
def test_each_change_that_lets_a_turn_ask_wakes_it(timed_out, change):
    bodies = Bodies(1 << 30, asking=6)  # window 2: turns 0 and 1 ask at once
    abandoned: list[int] = []
    asking = [_waiting_to_ask(bodies, turn, abandoned) for turn in (2, 3, 5)]
    if change == "done":
        bodies.done(0)  # reaches turn 2 only
        asking[0].join(STRETCHED / 2)
        assert not asking[0].is_alive() and asking[1].is_alive()
        bodies.done(1)
        bodies.done(2)  # reaches 3 and 4
        asking[1].join(STRETCHED / 2)
        assert not asking[1].is_alive() and asking[2].is_alive()
        bodies.close()
    elif change == "fetched in pieces":
        bodies.wait_to_ask(0)
        bodies.fetched(0)  # never read into a buffer: the window is all the jobs, 0 to 5
    else:
        bodies.close()
    for thread in asking:
        thread.join(STRETCHED / 2)
    assert not any(thread.is_alive() for thread in asking)
    assert timed_out == []
    assert sorted(abandoned) == {"done": [5], "fetched in pieces": [], "close": [2, 3, 5]}[change]
