#!/usr/bin/env python3
"""decrypt --follow keeps its memory flat: the RSS of a follow of 1,000 segments, sampled as it goes.

    python3 benchmarks/follow_rss.py                    # 1,000 segments, 20 ms apart
    python3 benchmarks/follow_rss.py --segments 5000

The channel is the test suite's loopback live origin (tests/live_origin.py) on a fast clock: the
fixture's ffmpeg-made segments (12-14 kB each), encrypted as the live service does, a new key
every 50 segments, a window of 200. hlsdecrypt follows it as a separate process, once plain and
once with --resume (which rewrites its journal after every segment); the process's RSS is read
from /proc every 100 segments written. The output is checked against the clear segments' bytes.
Prints a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the loopback live origin of the test suite
from live_origin import LiveOrigin  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # the hlsdecrypt beside this script, whatever is installed


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def written(out: Path, folder: Path, sizes: list[int]) -> int:
    """Segments in the output so far, from the size of the file being written."""
    parts = [p for p in folder.glob(f".{out.name}*.part")] or ([out] if out.exists() else [])
    size = max((p.stat().st_size for p in parts), default=0)
    done = total = 0
    for n in sizes:
        if total + n > size:
            break
        total += n
        done += 1
    return done


def follow_once(segments: int, period: float, every: int, extra: list[str]) -> tuple[dict[int, float], float, bool]:
    """RSS (MiB) at every ``every`` segments written, the peak, and whether the output is exact."""
    with tempfile.TemporaryDirectory() as tmp, \
            LiveOrigin(period=period, window=200, rotate=50, preroll=1, end_at=1000 + segments - 1) as origin:
        folder = Path(tmp)
        keys = folder / "keys.json"
        keys.write_text(json.dumps(origin.keys_json(segments // 50 + 2)))
        out = folder / "live.ts"
        sizes = [len(origin.clear(s)) for s in range(1000, 1000 + segments)]
        proc = subprocess.Popen([sys.executable, "-m", "hlsdecrypt", "-q", "decrypt", origin.playlist_url, "--follow",
                                 "-o", str(out), "--keys", str(keys), "--key-source", "none", *extra], env=ENV)
        samples: dict[int, float] = {}
        peak = 0.0
        while proc.poll() is None:
            try:
                rss = rss_mib(proc.pid)
            except OSError:
                break
            peak = max(peak, rss)
            mark = written(out, folder, sizes) // every * every
            if mark and mark not in samples:
                samples[mark] = rss
            time.sleep(0.01)
        if proc.wait():
            raise SystemExit(f"hlsdecrypt exited {proc.returncode}")
        clear = hashlib.sha256(b"".join(origin.clear(s) for s in range(1000, 1000 + segments))).hexdigest()
        exact = hashlib.sha256(out.read_bytes()).hexdigest() == clear
    return samples, peak, exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=1000)
    parser.add_argument("--period", type=float, default=0.02, help="seconds between segments (default 0.02)")
    parser.add_argument("--every", type=int, default=100, help="sample RSS every N segments written (default 100)")
    args = parser.parse_args()
    runs = {"`--follow`": [], "`--follow --resume`": ["--resume"]}
    results = {name: follow_once(args.segments, args.period, args.every, extra) for name, extra in runs.items()}
    marks = sorted(set().union(*(samples for samples, _, _ in results.values())))
    print(f"{args.segments:,} segments, one every {args.period * 1000:g} ms; RSS of the hlsdecrypt process (MiB):\n")
    print("| segments written | " + " | ".join(results) + " |")
    print("|---:|" + "---:|" * len(results))
    for mark in marks:
        print(f"| {mark:,} | " + " | ".join(f"{samples[mark]:.1f}" if mark in samples else "-"
                                            for samples, _, _ in results.values()) + " |")
    print("| peak | " + " | ".join(f"{peak:.1f}" for _, peak, _ in results.values()) + " |")
    print("| sha256 = clear segments | " + " | ".join("yes" if exact else "NO" for _, _, exact in results.values())
          + " |")


if __name__ == "__main__":
    main()
