"""The account's rate limit as the server sees it: across threads, processes, slow connections and Ctrl-Z."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from conftest import FIXTURES, sha256
from fake_volc import AK, SK, FakeLiveApi
from servers import SlowConnectProxy

from hlsdecrypt.errors import UsageError
from hlsdecrypt.ratelimit import MARGIN, RateLimiter

LIVE = FIXTURES / "live_rotation"
KEYS = json.loads((LIVE / "keys.json").read_text())  # KeyID -> hex


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 3))
        self.now += seconds


def test_turns_are_an_interval_apart(tmp_path):
    t = FakeTime()
    limiter = RateLimiter(2.0, "acct", directory=tmp_path, clock=t.clock, sleep=t.sleep)
    for _ in range(3):
        limiter.acquire()
    assert t.slept == [0.5 + MARGIN] * 2


def test_the_interval_counts_from_the_answer_not_the_send(tmp_path):
    t = FakeTime()
    limiter = RateLimiter(2.0, "acct", directory=tmp_path, clock=t.clock, sleep=t.sleep)
    with limiter.turn():
        t.now += 0.3  # connection set-up and the server's answer
    answered = t.now
    with limiter.turn():
        sent = t.now
    assert sent - answered == pytest.approx(0.5 + MARGIN)


def test_a_request_in_flight_holds_the_turn_until_its_lease_ends(tmp_path):
    t = FakeTime()
    holder = RateLimiter(1.0, "acct", directory=tmp_path, lease=5.0, clock=t.clock, sleep=t.sleep)
    waiter = RateLimiter(1.0, "acct", directory=tmp_path, clock=t.clock, sleep=t.sleep)
    turn = holder.turn()
    turn.__enter__()  # sent, never answered: its process was stopped or killed
    start = t.now
    waiter.acquire()
    assert t.now - start >= 5.0


def test_a_symlink_planted_at_the_rate_file_is_refused_and_its_target_untouched(tmp_path):
    limiter = RateLimiter(1.0, "acct", directory=tmp_path / "rl")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    limiter.path.symlink_to(victim)
    with pytest.raises(UsageError, match="symlink"):
        limiter.acquire()
    assert victim.read_text() == "precious"


_HOLDER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from hlsdecrypt.ratelimit import RateLimiter
    limiter = RateLimiter(50.0, "acct", directory=Path(sys.argv[1]), lease=float(sys.argv[2]))
    if sys.argv[3] == "in-flight":
        turn = limiter.turn()
        turn.__enter__()
    else:
        limiter.acquire()
    print("ready", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
""")


@pytest.mark.parametrize("when", ["in-flight", "between-requests"])
def test_a_process_stopped_with_ctrl_z_does_not_block_the_account(tmp_path, when):
    child = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path), "0.5", when], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        done = threading.Event()
        limiter = RateLimiter(50.0, "acct", directory=tmp_path)
        threading.Thread(target=lambda: (limiter.acquire(), done.set()), daemon=True).start()
        assert done.wait(30), "the stopped process kept the turn past its lease"
    finally:
        child.kill()
        child.wait()


def _decrypt_in_two_processes(api_url: str, rate: float, tmp_path: Path) -> None:
    env = {**os.environ, "HLSDECRYPT_API_ENDPOINT": api_url, "VOLC_ACCESSKEY": AK, "VOLC_SECRETKEY": SK,
           "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path / "home")}
    procs = [subprocess.Popen([sys.executable, "-m", "hlsdecrypt", "decrypt", str(LIVE / "index.m3u8"),
                               "-o", str(tmp_path / f"out{i}.ts"), "--key-source", "api", "--api-rate", str(rate)],
                              env=env, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    for i in range(2):
        assert sha256(tmp_path / f"out{i}.ts") == sha256(LIVE / "clear.ts")


@pytest.mark.parametrize("connect_delay", [0.0, 0.3])
def test_two_processes_never_arrive_closer_than_the_limit(tmp_path, connect_delay):
    """Each new connection through the proxy takes 300 ms: more than the interval itself."""
    rate = 4.0
    with FakeLiveApi(KEYS, rate=rate) as api, SlowConnectProxy(api.address, connect_delay) as proxy:
        _decrypt_in_two_processes(proxy.url, rate, tmp_path)
    assert len(api.arrivals) == 2 * len(KEYS)  # nothing refused, so nothing asked twice
    assert api.too_fast == 0
    assert api.min_gap() >= 1 / rate
