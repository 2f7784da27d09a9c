"""Many machines, one account: the key store and the rate limit they share through a real Redis.

A ``redis-server`` (the distribution's package) is started on a free loopback port for these
tests, with no persistence, and stopped after; without it they are skipped, saying how to
install it (``.ci/run`` does, so CI always runs them).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import FIXTURES, sha256
from fake_volc import AK, SK, FakeLiveApi
from tls import PEM

from hlsdecrypt import stop
from hlsdecrypt.cli import main
from hlsdecrypt.crypto import DataKey
from hlsdecrypt.errors import KeyStoreError
from hlsdecrypt.fleet import SECRET_ENV, open_store
from hlsdecrypt.playlist import KeyRef
from hlsdecrypt.shard import Shard

ROOT = Path(__file__).resolve().parent.parent
CLEAR = FIXTURES / "clear"
LIVE = FIXTURES / "live_rotation"
PASSWORD = "fleet-redis-password-0001"
SECRET = "the fleet's sealing secret, shared by its machines"
KEY_URI = "https://kms.example.com/k?key_id={key_id}"

try:
    import redis
except ImportError:
    redis = None

NO_REDIS = ("redis-server is not installed: apt-get install redis-server (.ci/run installs it)"
            if shutil.which("redis-server") is None else
            "redis-py is not installed: pip install -e '.[test]' (or '.[redis]')" if redis is None else None)
needs_redis = pytest.mark.skipif(NO_REDIS is not None, reason=NO_REDIS or "")


class RedisServer:
    """``redis-server`` on a free loopback port, without persistence, for one test or module."""

    def __init__(self, folder: Path, *, password: str = PASSWORD, tls: bool = False):
        self.folder, self.password, self.tls = folder, password, tls
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://:{self.password}@127.0.0.1:{self.port}/0"

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, ssl=self.tls,
                           ssl_ca_certs=str(PEM) if self.tls else None, socket_timeout=5)

    def start(self) -> "RedisServer":
        for _ in range(5):  # a free port may be taken between our look and the server's bind
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
            listen = (["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(PEM),
                       "--tls-key-file", str(PEM), "--tls-auth-clients", "no"] if self.tls
                      else ["--port", str(self.port)])
            log = open(self.folder / "redis.log", "ab")
            self.proc = subprocess.Popen(["redis-server", *listen, "--bind", "127.0.0.1", "--save", "",
                                          "--appendonly", "no", "--dir", str(self.folder),
                                          "--requirepass", self.password], stdout=log, stderr=log)
            log.close()
            if self._ready():
                return self
            self.stop()
        raise RuntimeError(f"redis-server did not start: see {self.folder / 'redis.log'}")

    def _ready(self) -> bool:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if self.client().ping():
                    return True
            except redis.RedisError:
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    if NO_REDIS:
        pytest.skip(NO_REDIS)
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def store_url(redis_server) -> str:
    """The module's Redis, emptied for each test."""
    redis_server.client().flushall()
    return redis_server.url


def _ref(key_id: str) -> KeyRef:
    return KeyRef(f"https://kms.example.com/k?key_id={key_id}", f"https://kms.example.com/k?key_id={key_id}",
                  key_id, None, 1)


def _raw_redis(client) -> list[tuple[bytes, bytes]]:
    """Every name and value, hashes flattened: what a reader of the Redis sees."""
    seen = []
    for name in client.scan_iter("*"):
        if client.type(name) == b"hash":
            seen += [(name, field + b"=" + value) for field, value in client.hgetall(name).items()]
        else:
            seen.append((name, client.get(name)))
    return seen


def _make_streams(tmp_path: Path, count: int, rotate: int) -> tuple[list[Path], dict[str, str]]:
    """``count`` encrypted copies of the clear fixture, each under its own KeyIDs, as the live service names them."""
    folders, keys = [], {}
    for n in range(count):
        folder = tmp_path / "streams" / f"rec{n}"
        assert main(["encrypt", str(CLEAR / "index.m3u8"), "-o", str(folder), "--rotate", str(rotate), "--iv", "zero",
                     "--key-uri", KEY_URI, "-q"]) == 0
        keys.update(json.loads((folder / "keys.json").read_text()))
        folders.append(folder)
    return folders, keys


def _machine_env(tmp_path: Path, name: str, api_url: str, store: str) -> dict[str, str]:
    """A machine of its own: its own home and cache folder (so its own lock files); only Redis is shared."""
    home = tmp_path / name
    return {**os.environ, "HOME": str(home / "home"), "XDG_CACHE_HOME": str(home / "cache"),
            "VOLC_ACCESSKEY": AK, "VOLC_SECRETKEY": SK, "HLSDECRYPT_API_ENDPOINT": api_url,
            "HLSDECRYPT_KEY_STORE": store, SECRET_ENV: SECRET}


def _hlsdecrypt(*argv: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hlsdecrypt", *argv], env=env, stderr=subprocess.PIPE, text=True)


@needs_redis
def test_four_machines_ask_each_key_once_never_too_fast_and_decrypt_byte_identical(store_url, redis_server,
                                                                                     tmp_path):
    rate = 10.0
    folders, keys = _make_streams(tmp_path, 8, rotate=2)
    assert len(keys) == 24
    batch = tmp_path / "batch.txt"
    batch.write_text("# eight recordings, dealt to four machines\n" +
                     "".join(f"{f / 'index.m3u8'} {tmp_path / 'out' / f.name}.ts\n" for f in folders))
    (tmp_path / "out").mkdir()
    with FakeLiveApi(keys, rate=rate) as api:
        machines = [_hlsdecrypt("decrypt", "--batch", str(batch), "--shard", f"{i}/4", "--key-source", "api",
                                "--api-rate", str(rate), env=_machine_env(tmp_path, f"m{i}", api.url, store_url))
                    for i in range(1, 5)]
        logs = [(m.wait(timeout=300), m.stderr.read()) for m in machines]
        for code, err in logs:
            assert code == 0, err
            assert "2 of 2 streams decrypted" in err
        assert api.too_fast == 0 and api.bad_signatures == 0
        assert api.min_gap() >= 1 / rate
        assert sorted(api.asked) == sorted(keys)  # every KeyID once, across the fleet
        for folder in folders:
            assert sha256(tmp_path / "out" / f"{folder.name}.ts") == sha256(CLEAR / "clear.ts")

        # a fifth machine, later, over the whole list: the store answers, the API is not asked again
        (tmp_path / "again").mkdir()
        again = tmp_path / "again.txt"
        again.write_text("".join(f"{f / 'index.m3u8'} {tmp_path / 'again' / f.name}.ts\n" for f in folders))
        late = _hlsdecrypt("decrypt", "--batch", str(again), "--key-source", "api", "--api-rate", str(rate), "-v",
                           env=_machine_env(tmp_path, "m5", api.url, store_url))
        code, err = late.wait(timeout=120), late.stderr.read()
        assert code == 0, err
        assert len(api.asked) == len(keys)
        assert err.count("key from --key-store redis://:***@") == len(keys)
        for folder in folders:
            assert sha256(tmp_path / "again" / f"{folder.name}.ts") == sha256(CLEAR / "clear.ts")
    for name, value in _raw_redis(redis_server.client()):  # what a reader of the Redis learns
        for secret in (AK, SK, PASSWORD, SECRET, *keys):
            assert secret.encode() not in name + value
        for hex_key in keys.values():
            key = bytes.fromhex(hex_key)
            assert key not in value and hex_key.upper().encode() not in value.upper()
            assert base64.b64encode(key)[:20] not in value


@needs_redis
def test_redis_killed_mid_run_ends_the_whole_batch_with_exit_4_and_nothing_partial(tmp_path):
    folders, keys = _make_streams(tmp_path, 2, rotate=1)  # six keys each
    batch = tmp_path / "batch.txt"
    out = tmp_path / "out"
    out.mkdir()
    batch.write_text("".join(f"{f / 'index.m3u8'} {out / f.name}.ts\n" for f in folders))
    server = RedisServer(tmp_path / "redis").start()
    try:
        with FakeLiveApi(keys, rate=2.0) as api:
            proc = _hlsdecrypt("decrypt", "--batch", str(batch), "--key-source", "api", "--api-rate", "2",
                               env=_machine_env(tmp_path, "m1", api.url, server.url))
            deadline = time.monotonic() + 60
            while not api.asked and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert api.asked, "the run never asked the API"
            server.proc.send_signal(signal.SIGKILL)
            code, err = proc.wait(timeout=120), proc.stderr.read()
    finally:
        server.stop()
    assert code == 4, err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("hlsdecrypt: error: --key-store redis://:***@127.0.0.1:"), err
    assert PASSWORD not in err and "[2/2]" not in err  # the batch ended: the second stream was not begun
    assert list(out.iterdir()) == []  # no output, no temporary file
    assert len(api.asked) < 12


@needs_redis
def test_keys_sealed_in_redis_cannot_be_read_without_the_secret(store_url, redis_server):
    keys = {f"{n:032x}": DataKey(bytes([n]) * 16) for n in range(1, 4)}
    store = open_store(store_url, secret=SECRET).store
    for key_id, key in keys.items():
        store.store(_ref(key_id), key)
    for name, value in _raw_redis(redis_server.client()):
        for key_id, key in keys.items():
            assert key_id.encode() not in name + value
            assert key.reveal() not in value and key.reveal().hex().encode() not in value.lower()
    other_machine = open_store(store_url, secret=SECRET).store
    assert {k: other_machine.lookup(_ref(k)) for k in keys} == keys
    with pytest.raises(KeyStoreError, match=f"{SECRET_ENV} is not the secret") as wrong:
        open_store(store_url, secret="a guess")
    with pytest.raises(KeyStoreError, match=f"sealed: set {SECRET_ENV}") as none:
        open_store(store_url, secret="")
    for exc in (wrong, none):
        assert PASSWORD not in str(exc.value) and "a guess" not in str(exc.value)


@needs_redis
def test_a_sealed_value_moved_under_another_keyid_is_an_error_never_a_wrong_key(store_url, redis_server):
    store = open_store(store_url, secret=SECRET).store
    store.store(_ref("a" * 32), DataKey(b"A" * 16))
    store.store(_ref("b" * 32), DataKey(b"B" * 16))
    client = redis_server.client()
    client.set(store._name("b" * 32), client.get(store._name("a" * 32)))
    with pytest.raises(KeyStoreError, match=f"KeyID {'b' * 32} does not unseal"):
        store.lookup(_ref("b" * 32))
    assert store.lookup(_ref("a" * 32)) == DataKey(b"A" * 16)


@needs_redis
def test_a_store_of_unsealed_keys_refuses_a_machine_with_a_secret(store_url):
    open_store(store_url, secret="").store.store(_ref("c" * 32), DataKey(b"C" * 16))
    with pytest.raises(KeyStoreError, match="keeps keys unsealed"):
        open_store(store_url, secret=SECRET)
    assert open_store(store_url, secret="").store.lookup(_ref("c" * 32)) == DataKey(b"C" * 16)


@needs_redis
def test_each_keyid_is_written_once_the_first_key_stays(store_url):
    first, second = open_store(store_url).store, open_store(store_url).store
    first.store(_ref("d" * 32), DataKey(b"1" * 16))
    second.store(_ref("d" * 32), DataKey(b"2" * 16))
    assert second.lookup(_ref("d" * 32)) == DataKey(b"1" * 16)
    assert first.lookup(_ref("e" * 32)) is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens there once it is closed


def test_an_unreachable_store_fails_at_once_with_exit_4_and_hides_the_password(run, tmp_path):
    code, err = run("decrypt", LIVE / "index.m3u8", "-o", tmp_path / "out.ts", "--keys", LIVE / "keys.json",
                    "--key-store", f"redis://:{PASSWORD}@127.0.0.1:{_closed_port()}/0")
    assert code == 4
    assert err.count("\n") == 1 and "error: --key-store redis://:***@127.0.0.1:" in err and ": connecting: " in err
    assert PASSWORD not in err
    assert not (tmp_path / "out.ts").exists()


@needs_redis
def test_a_wrong_redis_password_is_exit_4_and_never_shown(run, redis_server, tmp_path, monkeypatch):
    monkeypatch.setenv("HLSDECRYPT_KEY_STORE", f"redis://:not-the-{PASSWORD}@127.0.0.1:{redis_server.port}/0")
    code, err = run("decrypt", LIVE / "index.m3u8", "-o", tmp_path / "out.ts", "--keys", LIVE / "keys.json")
    assert code == 4 and "error: --key-store redis://:***@" in err
    assert PASSWORD not in err


def test_a_store_url_of_another_scheme_is_a_usage_error(run, tmp_path):
    code, err = run("decrypt", LIVE / "index.m3u8", "-o", tmp_path / "out.ts", "--key-store",
                    "http://user:pw@127.0.0.1:1/")
    assert code == 2 and "want a redis:// or rediss:// URL" in err and ":pw@" not in err


def test_without_redis_py_the_message_says_how_to_install_it(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # what the import finds when the extra is not installed
    code, err = run("decrypt", LIVE / "index.m3u8", "-o", tmp_path / "out.ts", "--key-store", "redis://127.0.0.1/0")
    assert code == 2 and "pip install 'hlsdecrypt[redis]'" in err


@needs_redis
def test_rediss_with_tls_and_a_password(tmp_path):
    server = RedisServer(tmp_path / "redis", tls=True)
    try:
        server.start()
    except RuntimeError:
        pytest.skip("this redis-server was built without TLS")
    try:
        trusted = f"{server.url}?ssl_ca_certs={PEM}"
        open_store(trusted, secret=SECRET).store.store(_ref("f" * 32), DataKey(b"F" * 16))
        assert open_store(trusted, secret=SECRET).store.lookup(_ref("f" * 32)) == DataKey(b"F" * 16)
        with pytest.raises(KeyStoreError, match="certificate verify failed") as untrusted:
            open_store(server.url, secret=SECRET)
        assert PASSWORD not in str(untrusted.value) and str(untrusted.value).count("\n") == 0
    finally:
        server.stop()


@needs_redis
def test_key_cache_beside_the_store_keeps_each_key_in_both(run, store_url, tmp_path, monkeypatch):
    keys = json.loads((LIVE / "keys.json").read_text())
    monkeypatch.setenv("VOLC_ACCESSKEY", AK)
    monkeypatch.setenv("VOLC_SECRETKEY", SK)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with FakeLiveApi(keys, rate=20) as api:
        code, err = run("decrypt", LIVE / "index.m3u8", "-o", tmp_path / "out.ts", "--key-source", "api",
                        "--api-endpoint", api.url, "--api-rate", "20", "--key-cache", tmp_path / "cache.json",
                        "--key-store", store_url)
    assert code == 0, err
    assert sha256(tmp_path / "out.ts") == sha256(LIVE / "clear.ts")
    assert json.loads((tmp_path / "cache.json").read_text()) == keys
    store = open_store(store_url).store
    assert {k: store.lookup(_ref(k)) for k in keys} == {k: DataKey.from_hex(v) for k, v in keys.items()}


class _Waited(Exception):
    pass


def _must_not_wait(seconds: float) -> None:
    raise _Waited(seconds)


@needs_redis
def test_a_holder_that_died_keeps_the_turn_only_until_its_lease_ends(store_url):
    fleet = open_store(store_url)
    holder = fleet.limiter(50.0, AK, "https://api.example", timeout=1.0)
    holder.lease = 0.5
    holder.turn().__enter__()  # sent, never answered: its machine died
    waits: list[float] = []
    waiter = fleet.limiter(50.0, AK, "https://api.example", timeout=1.0)
    waiter._sleep = lambda s: (waits.append(s), stop.pause(s))
    done = threading.Event()
    threading.Thread(target=lambda: (waiter.acquire(), done.set()), daemon=True).start()
    assert done.wait(30), "the dead holder kept the turn past its lease"
    assert waits  # it did have to wait for the lease


@needs_redis
def test_a_holder_whose_lease_ran_out_does_not_free_the_turn_another_took_since(store_url):
    fleet = open_store(store_url)
    late = fleet.limiter(50.0, AK, "https://api.example", timeout=1.0)
    late.lease = 0.2
    late_turn = late.turn()
    late_turn.__enter__()
    now = fleet.limiter(50.0, AK, "https://api.example", timeout=1.0)
    done = threading.Event()
    held = now.turn()
    threading.Thread(target=lambda: (held.__enter__(), done.set()), daemon=True).start()
    assert done.wait(30)
    late_turn.__exit__(None, None, None)  # its answer came back at last
    third = fleet.limiter(50.0, AK, "https://api.example", timeout=1.0)
    third._sleep = _must_not_wait
    with pytest.raises(_Waited):
        third.acquire()  # the second holder's request is still in flight
    held.__exit__(None, None, None)


@needs_redis
def test_waiting_for_the_turn_ends_at_once_on_stop(store_url):
    fleet = open_store(store_url)
    fleet.limiter(1.0, AK, "https://api.example", timeout=10.0).turn().__enter__()
    waiter = fleet.limiter(1.0, AK, "https://api.example", timeout=10.0)
    outcome: list[BaseException] = []
    started = threading.Event()

    def wait() -> None:
        started.set()
        try:
            waiter.acquire()
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    started.wait(10)
    try:
        stop.request_stop()
        thread.join(30)
    finally:
        stop.reset()
    assert len(outcome) == 1 and isinstance(outcome[0], stop.Stopped)


@needs_redis
def test_the_rate_limit_is_named_by_a_hash_never_the_access_key(store_url, redis_server):
    fleet = open_store(store_url)
    fleet.limiter(50.0, AK, "https://api.example", timeout=1.0).acquire()
    seen = _raw_redis(redis_server.client())
    assert any(name.startswith(b"hlsdecrypt:rate:") for name, _ in seen)
    assert all(AK.encode() not in name + value for name, value in seen)


def test_shards_deal_the_entries_round_robin_and_together_hold_each_once():
    entries = list(range(1, 11))
    shares = [Shard.parse(f"{i}/3").take(entries) for i in (1, 2, 3)]
    assert shares == [[1, 4, 7, 10], [2, 5, 8], [3, 6, 9]]
    assert Shard.parse(" 1 / 1 ").take(entries) == entries
    assert Shard.parse("4/4").take([1, 2]) == []


def test_shard_counts_batch_entries_not_lines(run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    batch = tmp_path / "batch.txt"
    lines = []
    for n in range(1, 5):
        lines += [f"# recording {n}", "", f"{CLEAR / 'index.m3u8'} {out / f'rec{n}.ts'}"]
    batch.write_text("\n".join(lines) + "\n")
    code, err = run("decrypt", "--batch", batch, "--shard", "2/2")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["rec2.ts", "rec4.ts"]
    assert sha256(out / "rec2.ts") == sha256(CLEAR / "clear.ts")


@pytest.mark.parametrize("shard, says", [("0/4", "$((JOB_COMPLETION_INDEX + 1))/4"), ("5/4", "I counts from 1 to 4"),
                                         ("1/0", "N is at least 1"), ("two/4", "want I/N")])
def test_a_bad_shard_is_a_usage_error_that_says_why(run, tmp_path, shard, says):
    code, err = run("decrypt", CLEAR / "index.m3u8", "-o", tmp_path / "out.ts", "--shard", shard)
    assert code == 2 and says in err
    assert not (tmp_path / "out.ts").exists()
