#!/usr/bin/env python3
"""hlsdecrypt against cat, openssl and ffmpeg on large local streams, plus HTTP and API runs,
start-up time, and playlists of up to 100,000 segments.

Over HTTP (http_bench.py): nginx on loopback when it is installed, else the test suite's server,
against curl's floor, and streamlink and yt-dlp when they are installed.

    python3 benchmarks/run.py                       # 720 MB stream, 3 rounds
    python3 benchmarks/run.py --sizes 100,720,2000  # also shows that memory does not grow
    python3 benchmarks/run.py --only startup,long   # start-up, and cost against playlist length

Streams are built by make_stream.py into bench-data/ (git-ignored) when missing. Each round
runs every tool once, in turn, writing to the same disk; the table gives the median wall time,
the peak RSS of the process tree, and whether the output's sha256 is the clear reference's
(ffmpeg remuxes, so its bytes differ by design). Prints Markdown tables for the README.

Start-up runs each command many times, in turn with ``python -c pass``, and gives medians: once
for this tree through PYTHONPATH, once installed into a clean venv, as users get it. Long
playlists are built by make_long_playlist.py: one-packet segments, so that what is measured is
what each command costs per playlist entry, not per byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench-data"
sys.path.insert(0, str(ROOT / "tests"))  # the loopback servers of the test suite
sys.path.insert(0, str(ROOT / "benchmarks"))
from http_bench import http_tables  # after the path it needs
#: The hlsdecrypt measured is the one beside this script, whatever is installed.
HLSDECRYPT = [sys.executable, "-m", "hlsdecrypt"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def stream(mb: int) -> Path:
    path = DATA / f"s{mb}"
    if not (path / "clear.sha256").exists():
        subprocess.run([sys.executable, str(ROOT / "benchmarks/make_stream.py"), str(path), "--mb", str(mb)], check=True)
    return path


def timed(cmd: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a command and its children."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env or ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{cmd[0]} failed: {proc.stderr.read().decode()[-500:]}")
    return wall, usage.ru_maxrss / 1024


class Usage(NamedTuple):
    wall: float  # seconds
    cpu: float  # user + system seconds, the process and its children
    rss: float  # peak MiB of the largest process


def usage_of(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> Usage:
    """Like ``timed``, with CPU time too, which a busy machine disturbs less than wall time."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env or ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd[:5])} failed: {proc.stderr.read().decode()[-500:]}")
    return Usage(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def openssl_script(src: Path, out: Path) -> Path:
    """One openssl process per segment, as a shell loop would do it."""
    keys = json.loads((src / "keys.json").read_text())
    lines, key, seq = ["set -e", f": > {out}"], None, 1000
    for line in (src / "index.m3u8").read_text().splitlines():
        if line.startswith("#EXT-X-KEY"):
            key = keys[line.split('URI="')[1].split(".bin")[0]]
        elif line and not line.startswith("#"):
            lines.append(f"openssl enc -d -aes-128-cbc -K {key} -iv {seq:032x} -in {src / line} >> {out}")
            seq += 1
    script = out.with_suffix(".sh")
    script.write_text("\n".join(lines) + "\n")
    return script


def local_table(src: Path, rounds: int, out_dir: Path) -> list[str]:
    segs = sorted(src.glob("seg*.ts"))
    size = sum(p.stat().st_size for p in segs)
    out = out_dir / "out.bin"
    tools = {
        "cat (encrypted segments)": ["sh", "-c", f"cat {src}/seg*.ts > {out}"],
        "hlsdecrypt": [*HLSDECRYPT, "decrypt", str(src / "index.m3u8"), "-o", str(out), "-q"],
        "openssl, one process per segment": ["sh", str(openssl_script(src, out_dir / "openssl"))],
    }
    if shutil.which("ffmpeg"):
        tools["ffmpeg -c copy"] = ["ffmpeg", "-v", "error", "-y", "-allowed_extensions", "ALL", "-i",
                                   str(src / "index.m3u8"), "-c", "copy", "-f", "mpegts", str(out)]
    reference = (src / "clear.sha256").read_text().strip()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in tools}
    match: dict[str, str] = {}
    for _ in range(rounds):
        for name, cmd in tools.items():
            out.unlink(missing_ok=True)
            (out_dir / "openssl").unlink(missing_ok=True)
            subprocess.run(["sync"])
            runs[name].append(timed(cmd))
            produced = out if out.exists() else out_dir / "openssl"
            match[name] = "n/a" if name.startswith("cat") else ("yes" if sha256(produced) == reference else "no")
    cat_wall = statistics.median(w for w, _ in runs["cat (encrypted segments)"])
    rows = [f"Local stream: {len(segs)} segments, {size / 1e6:.0f} MB, {len(list(src.glob('key*.bin')))} keys; "
            f"output to {out_dir}; median of {rounds} rounds", "",
            "| tool | wall (s) | MB/s | × cat | peak RSS (MiB) | sha256 = clear reference |",
            "|---|---:|---:|---:|---:|---|"]
    for name, samples in runs.items():
        wall = statistics.median(w for w, _ in samples)
        rss = max(r for _, r in samples)
        rows.append(f"| {name} | {wall:.2f} | {size / wall / 1e6:,.0f} | {wall / cat_wall:.2f} | {rss:.0f} | {match[name]} |")
    return rows


def memory_rows(sizes: list[int], out_dir: Path) -> list[str]:
    rows = ["| stream | hlsdecrypt wall (s) | peak RSS (MiB) |", "|---|---:|---:|"]
    for mb in sizes:
        src = stream(mb)
        out = out_dir / "out.bin"
        out.unlink(missing_ok=True)
        wall, rss = timed([*HLSDECRYPT, "decrypt", str(src / "index.m3u8"), "-o", str(out), "-q"])
        assert sha256(out) == (src / "clear.sha256").read_text().strip(), f"{mb} MB: output differs"
        rows.append(f"| {mb} MB | {wall:.2f} | {rss:.0f} |")
    return rows


def api_rows(src: Path, out_dir: Path) -> list[str]:
    """Keys from the fake API at 1 request/s: fetching them should overlap with decrypting."""
    from fake_volc import AK, SK, FakeLiveApi

    keys = json.loads((src / "keys.json").read_text())
    playlist = src / "index-api.m3u8"
    text = (src / "index.m3u8").read_text()
    for name in keys:
        text = text.replace(f'URI="{name}.bin"', f'URI="https://kms.invalid/get?key_id={name}"')
    playlist.write_text(text)
    out = out_dir / "out.bin"
    with tempfile.TemporaryDirectory() as cache, FakeLiveApi(keys, rate=1.0) as api:
        env = {**ENV, "VOLC_ACCESSKEY": AK, "VOLC_SECRETKEY": SK, "XDG_CACHE_HOME": cache,
               "HLSDECRYPT_API_ENDPOINT": api.url}
        local, _ = timed([*HLSDECRYPT, "decrypt", str(src / "index.m3u8"), "-o", str(out), "-q"])
        keys_only, _ = timed([*HLSDECRYPT, "keys", str(playlist), "--key-source", "api",
                              "--export", str(out_dir / "k.json"), "-q"], env)
        time.sleep(1.1)  # the account's rate limit spans processes: let the last booking expire
        both, _ = timed([*HLSDECRYPT, "decrypt", str(playlist), "-o", str(out), "-q", "--key-source", "api",
                         "--force"], env)  # over the first run's output
        assert sha256(out) == (src / "clear.sha256").read_text().strip()
    return ["| API key source (fake, 1 request/s) | wall (s) |", "|---|---:|",
            f"| decrypt with local key files | {local:.2f} |",
            f"| fetch the {len(keys)} keys only (`keys --export`) | {keys_only:.2f} |",
            f"| decrypt with keys from the API | {both:.2f} |",
            f"| sum of the two above, had they not overlapped | {local + keys_only:.2f} |"]


#: Libraries whose import costs more than a short command's own work: which commands load them.
HEAVY = ("m3u8", "Crypto", "requests")


def imported(cmd: list[str], cwd: Path, env: dict) -> str:
    """The heavy libraries a command imports (read from ``python -X importtime``)."""
    done = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], env=env, cwd=cwd, capture_output=True,
                          text=True, check=True)
    names = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return ", ".join(h for h in HEAVY if h in names) or "none"


def clean_venv(tree: Path) -> Path:
    """A venv holding hlsdecrypt installed from ``tree`` with its dependencies alone, as a user's
    ``pip install .`` makes it: no cffi, no other packages' ``.pth`` files (made anew each time;
    it needs the package index)."""
    venv = DATA / "clean-venv"
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", str(tree)], check=True,
                   stdout=subprocess.DEVNULL)
    return venv / "bin/python"


def startup_rows(runs: int, out_dir: Path, python: str = sys.executable, env: dict | None = None,
                 title: str = "") -> list[str]:
    """Commands that do little, each run ``runs`` times in turn with ``python -c pass``: the medians.

    By default the tree's own modules through PYTHONPATH, compiled to bytecode as pip would
    (PYTHONDONTWRITEBYTECODE would otherwise make every run compile them anew); with ``python``
    and ``env``, what that interpreter has installed."""
    env = env if env is not None else ENV
    if env is ENV:
        subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ENV["PYTHONPATH"], "hlsdecrypt")],
                       check=True)
    run = [python, "-m", "hlsdecrypt"]
    live = ROOT / "fixtures/live_rotation"
    out = out_dir / "clear.ts"
    commands = {
        "`python3 -c pass` (the floor)": [python, "-c", "pass"],
        "`hlsdecrypt --version`": [*run, "--version"],
        "`hlsdecrypt --help`": [*run, "--help"],
        "importing m3u8 and pycryptodome's AES alone (fixed dependencies)":
            [python, "-c", "import m3u8; from Crypto.Cipher import AES"],
        "`hlsdecrypt decrypt` of the shipped fixture (README quick start)":
            [*run, "decrypt", str(live / "index.m3u8"), "--keys", str(live / "keys.json"), "-o", str(out),
             "--force"],
    }
    samples: dict[str, list[Usage]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, cmd in commands.items():
            samples[name].append(usage_of(cmd, env=env, cwd=out_dir))  # cwd: -m must find this tree's package, no other
    assert sha256(out) == sha256(live / "clear.ts")
    floor = statistics.median(u.wall for u in samples["`python3 -c pass` (the floor)"])
    rows = [f"Start-up{title}: median of {runs} runs each, in turn", "",
            "| command | wall (ms) | over the floor (ms) | CPU (ms) | peak RSS (MiB) | imports |",
            "|---|---:|---:|---:|---:|---|"]
    for name, cmd in commands.items():
        wall = statistics.median(u.wall for u in samples[name])
        cpu = statistics.median(u.cpu for u in samples[name])
        rss = statistics.median(u.rss for u in samples[name])
        heavy = "—" if "python3" in name else imported(cmd, out_dir, env)
        rows.append(f"| {name} | {wall * 1000:.0f} | {(wall - floor) * 1000:.0f} | {cpu * 1000:.0f} | {rss:.0f} "
                    f"| {heavy} |")
    return rows


def long_playlist(segments: int) -> Path:
    path = DATA / f"long{segments}"
    if not (path / "clear.sha256").exists():
        subprocess.run([sys.executable, str(ROOT / "benchmarks/make_long_playlist.py"), str(path),
                        "--segments", str(segments)], check=True)
    return path


def long_rows(sizes: list[int], out_dir: Path) -> list[str]:
    """Each command on playlists of growing length: its cost per segment should not grow."""
    def commands(src: Path) -> dict[str, list[str]]:
        playlist, keys = str(src / "index.m3u8"), ["--keys", str(src / "keys.json"), "--key-source", "none"]
        return {
            "`keys` (list)": [*HLSDECRYPT, "keys", playlist],
            "`keys --export`": [*HLSDECRYPT, "keys", playlist, *keys, "--export", str(out_dir / "k.json")],
            "`verify`": [*HLSDECRYPT, "verify", playlist, *keys],
            "`verify --json`": [*HLSDECRYPT, "verify", playlist, *keys, "--json", str(out_dir / "r.json")],
            "`decrypt`": [*HLSDECRYPT, "decrypt", playlist, *keys, "-o", str(out_dir / "out.ts")],
            "`decrypt --resume`": [*HLSDECRYPT, "decrypt", playlist, *keys, "-o", str(out_dir / "out.ts"), "--resume"],
        }

    results: dict[str, list[Usage]] = {}
    streams = [long_playlist(n) for n in sizes]
    for src in streams:
        for name, cmd in commands(src).items():
            for leftover in ("out.ts", "k.json"):
                (out_dir / leftover).unlink(missing_ok=True)
            results.setdefault(name, []).append(usage_of(cmd, cwd=out_dir))
            if name.startswith("`decrypt"):
                assert sha256(out_dir / "out.ts") == (src / "clear.sha256").read_text().strip(), f"{name}: differs"
    keys = [len(json.loads((src / "keys.json").read_text())) for src in streams]
    head = " | ".join(f"{n:,} segments, {k:,} keys" for n, k in zip(sizes, keys))
    rows = ["Long playlists (one 188-byte packet per segment, so nearly all of it is per-segment cost): "
            "wall s, CPU s, peak MiB", "",
            f"| command | {head} | CPU per segment at {sizes[-1]:,} |", "|---|" + "---:|" * (len(sizes) + 1)]
    for name, usages in results.items():
        cells = " | ".join(f"{u.wall:.2f} s, {u.cpu:.2f} s, {u.rss:.0f} MiB" for u in usages)
        rows.append(f"| {name} | {cells} | {usages[-1].cpu / sizes[-1] * 1e6:.0f} µs |")
    return rows


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    aes = "AES-NI" if " aes " in Path("/proc/cpuinfo").read_text() else "no AES-NI"
    return f"{os.cpu_count()} cores, {cpu} ({aes}), Python {platform.python_version()}, {platform.system()}"


SECTIONS = ("local", "http", "api", "startup", "long")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=720, help="size of the main stream (default 720)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="", help="comma-separated stream sizes in MB for the memory table")
    ap.add_argument("--latency", type=float, default=0.05, help="seconds added per HTTP request (default 0.05)")
    ap.add_argument("--data", type=Path, default=DATA, help=f"where the generated streams live (default {DATA})")
    ap.add_argument("--startup-runs", type=int, default=21, help="runs of each start-up command (default 21)")
    ap.add_argument("--long", default="10000,100000",
                    help="segments in the long playlists, comma-separated (default 10000,100000)")
    ap.add_argument("--tree", type=Path, default=ROOT,
                    help="the checkout whose hlsdecrypt the startup and long tables measure (default this one)")
    ap.add_argument("--only", default=",".join(SECTIONS),
                    help=f"the tables to make, comma-separated, among {', '.join(SECTIONS)} (default all)")
    ap.add_argument("--streamlink", help="the streamlink to compare with over HTTP (default: the one on PATH, if any)")
    ap.add_argument("--yt-dlp", dest="yt_dlp", help="the yt-dlp to compare with over HTTP (default: the one on PATH)")
    args = ap.parse_args()
    globals()["DATA"] = args.data
    ENV["PYTHONPATH"] = str(args.tree.resolve())
    only = set(args.only.split(","))
    if only - set(SECTIONS):
        ap.error(f"--only: no table {', '.join(sorted(only - set(SECTIONS)))}")
    DATA.mkdir(parents=True, exist_ok=True)
    src = stream(args.mb) if only & {"local", "api", "http"} else None
    print(f"Machine: {machine()}\n")
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        out_dir = Path(tmp)
        if "local" in only:
            print("\n".join(local_table(src, args.rounds, out_dir)), end="\n\n")
            if Path("/dev/shm").is_dir():  # memory, not disk: what each tool costs in CPU
                with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
                    print("\n".join(local_table(src, args.rounds, Path(shm))), end="\n\n")
        if args.sizes and "local" in only:
            print("\n".join(memory_rows([int(s) for s in args.sizes.split(",")], out_dir)), end="\n\n")
        if "http" in only:
            print("\n".join(http_tables(src, out_dir, rounds=args.rounds, latency=args.latency,
                                        streamlink=args.streamlink, yt_dlp=args.yt_dlp)), end="\n\n")
        if "api" in only:
            print("\n".join(api_rows(src, out_dir)), end="\n\n")
        if "startup" in only:
            print("\n".join(startup_rows(args.startup_runs, out_dir)), end="\n\n")
            clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
            print("\n".join(startup_rows(args.startup_runs, out_dir, str(clean_venv(args.tree.resolve())), clean,
                                          " in a clean venv (pip install of the tree, its dependencies alone)")),
                  end="\n\n")
        if "long" in only:
            print("\n".join(long_rows([int(n) for n in args.long.split(",")], out_dir)), end="\n\n")


if __name__ == "__main__":
    main()
