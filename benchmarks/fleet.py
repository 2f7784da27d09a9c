#!/usr/bin/env python3
"""A batch's key time with and without a warm shared key store (``--key-store``, Redis).

    python3 benchmarks/fleet.py                  # 4 streams x 6 KeyIDs, the API at 1 request/s
    python3 benchmarks/fleet.py --streams 8 --machines 4

Builds a batch of small streams under fresh KeyIDs (``hlsdecrypt encrypt`` of fixtures/clear,
one key per segment, KeyID-style key URIs), serves their keys from the test suite's fake API at
the account's rate, starts a private ``redis-server`` (apt-get install redis-server), and runs
the batch: with local keys (no key time at all), on one machine and on several sharing the
store and the limit while the store is cold, and on several again once it is warm. Each
"machine" is a process with its own HOME and cache folder: only Redis is shared. Every output
is checked against the clear reference's sha256. Prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the fake API of the test suite
HLSDECRYPT = [sys.executable, "-m", "hlsdecrypt"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CLEAR = ROOT / "fixtures" / "clear"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def start_redis(folder: Path) -> tuple[subprocess.Popen, str]:
    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            redis.Redis(port=port).ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def make_batch(work: Path, streams: int) -> tuple[Path, dict[str, str]]:
    keys: dict[str, str] = {}
    lines = []
    for n in range(streams):
        folder = work / "streams" / f"rec{n}"
        subprocess.run([*HLSDECRYPT, "encrypt", str(CLEAR / "index.m3u8"), "-o", str(folder), "--rotate", "1",
                        "--iv", "zero", "--key-uri", "https://kms.example.com/k?key_id={key_id}", "-q"],
                       env=ENV, check=True)
        keys.update(json.loads((folder / "keys.json").read_text()))
        lines.append(f"{folder / 'index.m3u8'} OUT/rec{n}.ts")
    template = work / "batch.template"
    template.write_text("\n".join(lines) + "\n")
    (work / "keys.json").write_text(json.dumps(keys))
    return template, keys


def run_batch(work: Path, template: Path, name: str, machines: int, extra: list[str], env: dict[str, str]) -> float:
    """The batch on ``machines`` processes at once (``--shard i/machines``); wall seconds until the last ends."""
    out = work / name
    out.mkdir()
    batch = work / f"{name}.txt"
    batch.write_text(template.read_text().replace("OUT/", f"{out}/"))
    procs = []
    start = time.perf_counter()
    for i in range(1, machines + 1):
        home = work / f"{name}-m{i}"
        procs.append(subprocess.Popen([*HLSDECRYPT, "decrypt", "--batch", str(batch), "--shard", f"{i}/{machines}",
                                       "-q", *extra],
                                      env={**env, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache")},
                                      stderr=subprocess.PIPE, text=True))
    for proc in procs:
        if proc.wait():
            raise SystemExit(f"{name}: {proc.stderr.read()[-500:]}")
    wall = time.perf_counter() - start
    reference = sha256(CLEAR / "clear.ts")
    assert all(sha256(p) == reference for p in out.iterdir()), f"{name}: an output differs from the clear reference"
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=4, help="streams in the batch, 6 KeyIDs each (default 4)")
    ap.add_argument("--machines", type=int, default=2, help="machines sharing the store (default 2)")
    ap.add_argument("--rate", type=float, default=1.0, help="the API's requests per second (default 1)")
    args = ap.parse_args()
    if not shutil.which("redis-server"):
        raise SystemExit("needs redis-server: apt-get install redis-server")
    import redis
    from fake_volc import AK, SK, FakeLiveApi

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        template, keys = make_batch(work, args.streams)
        redis_server, url = start_redis(work)
        try:
            with FakeLiveApi(keys, rate=args.rate) as api:
                env = {**ENV, "VOLC_ACCESSKEY": AK, "VOLC_SECRETKEY": SK, "HLSDECRYPT_API_ENDPOINT": api.url}
                api_args = ["--key-source", "api", "--api-rate", str(args.rate), "--key-store", url]
                rows = []

                def row(what: str, machines: int, extra: list[str]) -> None:
                    asked, refused = len(api.asked), api.too_fast
                    wall = run_batch(work, template, f"run{len(rows)}", machines, extra, env)
                    rows.append(f"| {what} | {machines} | {len(api.asked) - asked} | {api.too_fast - refused} "
                                f"| {wall:.1f} |")

                local_keys = ["--keys", str(work / "keys.json"), "--key-source", "none"]
                row("local keys (`--keys`): no key time", 1, local_keys)
                row("cold store", 1, api_args)
                redis.Redis.from_url(url).flushall()
                time.sleep(1 / args.rate)  # the flushed limit forgets the last answer: let its interval pass
                row("cold store, shared limit", args.machines, api_args)
                row("warm store", args.machines, api_args)
        finally:
            redis_server.kill()
            redis_server.wait()
    print(f"Batch of {args.streams} streams, {len(keys)} KeyIDs, the fake API at {args.rate:g} request/s:\n")
    print("| run | machines | API requests | refused as too fast | wall (s) |\n|---|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
