#!/usr/bin/env python3
"""hlsdecrypt over HTTP against curl, and streamlink and yt-dlp when they are installed.

    python3 benchmarks/http_bench.py --mb 720 --rounds 4
    python3 benchmarks/http_bench.py --streamlink ~/venv/bin/streamlink --yt-dlp ~/venv/bin/yt-dlp

The stream (make_stream.py, into bench-data/) is served on loopback by nginx when it is
installed (nginx_server.py: a config of our own, sendfile, keep-alive; the added latency needs
its echo module), else by the test suite's loopback server (a Python server, far slower: the
tables then measure it more than the clients), and the output says which. Two tables:

- the wire's speed: curl on one connection fetching every segment in order into one file (the
  floor: it moves the encrypted bytes and decrypts nothing), hlsdecrypt at 1, 6 (the default)
  and 8 jobs, hlsdecrypt on the same stream's local files, streamlink and yt-dlp with 6 threads;
- with ``--latency`` (50 ms) added to every answer: six curl connections, each fetching a
  sixth of the segments in order (the yardstick), against the same clients.

Each round runs every client once, in turn, each just after a run of the floor (or yardstick),
writing to the same disk after a ``sync``; a table gives the median wall time, the median of
the paired ratios to the floor (or yardstick), the peak RSS of the process tree, and whether
the output's sha256 is the clear stream's (checked after every run).
streamlink and yt-dlp are not dependencies: give their paths, or have them on PATH.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the loopback server of the test suite, when nginx is missing
sys.path.insert(0, str(Path(__file__).resolve().parent))
HLSDECRYPT = [sys.executable, "-m", "hlsdecrypt"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
THREADS = 6  # the default jobs, and what the other clients are given


@dataclass
class Served:
    """Where the stream's folder is served: ``url`` as fast as the server goes, ``slow_url`` with
    the latency added to every answer; ``server`` and ``slow_server`` say by what."""

    server: str
    url: str
    slow_server: str
    slow_url: str


@contextmanager
def served(data: Path, latency: float, *, prefer_nginx: bool = True) -> Iterator[Served]:
    """nginx when it is installed (for the latency, when its echo module is); the test suite's
    loopback server for what nginx cannot do here."""
    import nginx_server

    with ExitStack() as stack:
        fast = slow = None
        if prefer_nginx and nginx_server.available():
            web = stack.enter_context(nginx_server.Nginx(data, latency=latency))
            name = f"{nginx_server.version()} (Debian's package, a config of ours)"
            fast = (name, web.url)
            if web.latency_url:
                slow = (f"{name}, late by its echo module's echo_sleep", web.latency_url)
        if fast is None or slow is None:
            from servers import StaticServer

            why = "nginx is not installed" if not nginx_server.available() else \
                "not asked for" if not prefer_nginx else "nginx has no echo module"
            name = f"the test suite's loopback server (Python's http.server; {why})"
            if fast is None:
                fast = (name, stack.enter_context(StaticServer(data, quiet=True)).url)
            late = stack.enter_context(StaticServer(data, quiet=True))
            late.delay = latency
            slow = slow or (name, late.url)
        yield Served(fast[0], fast[1], slow[0], slow[1])


@dataclass
class Client:
    name: str
    command: list[str]
    outputs: list[Path]  # concatenated in this order, they must be the clear stream
    before: list[Path] = field(default_factory=list)  # removed before each run
    encrypted: bool = False  # a client that decrypts nothing: its outputs must be the bytes served


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of a command and the children it waited for.

    Run in ``cwd``, away from any checkout: ``python -m`` imports from the current folder first.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=ENV, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd)[:200]} failed: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}")
    return wall, usage.ru_maxrss / 1024


def sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def segments(src: Path) -> list[str]:
    return [line for line in (src / "index.m3u8").read_text().splitlines() if line and not line.startswith("#")]


def curl_lists(base: str, names: list[str], out_dir: Path, connections: int) -> tuple[list[Path], list[Path]]:
    """Config files for ``connections`` curls, each fetching every n-th segment into a file of its own."""
    lists, outputs = [], []
    for n in range(connections):
        path = out_dir / f"curl-{n}.txt"
        lines = []
        for name in names[n::connections]:
            lines += [f'url = "{base}/{name}"', f'output = "{out_dir / "curl-parts" / name}"']
        path.write_text("\n".join(lines) + "\n")
        lists.append(path)
    outputs = [out_dir / "curl-parts" / name for name in names]
    return lists, outputs


def clients(src: Path, base: str, out_dir: Path, *, floor: bool, streamlink: str | None,
            yt_dlp: str | None, local: bool) -> list[Client]:
    url = f"{base}/{src.name}/index.m3u8"
    out = out_dir / "out.ts"
    found: list[Client] = []
    if floor:
        listing = out_dir / "curl-floor.txt"
        listing.write_text("".join(f'url = "{base}/{src.name}/{name}"\n' for name in segments(src)))
        found.append(Client("curl, one connection, every segment in order, into one file (the floor)",
                            ["sh", "-c", f"exec curl -sS -K '{listing}' > '{out}'"], [out], encrypted=True))
    else:
        lists, parts = curl_lists(f"{base}/{src.name}", segments(src), out_dir, THREADS)
        script = " ".join(f"curl -sS -K '{p}' &" for p in lists) + " wait"
        found.append(Client(f"curl, {THREADS} connections, a sixth of the segments each (the yardstick)",
                            ["sh", "-c", f"mkdir -p '{out_dir / 'curl-parts'}'; {script}"], parts,
                            [out_dir / "curl-parts"], encrypted=True))
    if local:
        found.append(Client("hlsdecrypt on the local files of the same stream",
                            [*HLSDECRYPT, "decrypt", str(src / "index.m3u8"), "-o", str(out), "-q"], [out]))
    for jobs in ("1", None, "8"):
        found.append(Client(f"hlsdecrypt over HTTP, {f'--jobs {jobs}' if jobs else f'default {THREADS} jobs'}",
                            [*HLSDECRYPT, "decrypt", url, "-o", str(out), "-q", *(["--jobs", jobs] if jobs else [])],
                            [out]))
    if streamlink:
        found.append(Client(f"streamlink, {THREADS} segment threads",
                            [streamlink, "--loglevel", "error", "--stream-segment-threads", str(THREADS), "-o",
                             str(out), f"hls://{url}", "best"], [out]))
    if yt_dlp:
        found.append(Client(f"yt-dlp -N {THREADS}",
                            [yt_dlp, "-q", "--no-warnings", "--no-cache-dir", "-N", str(THREADS), "--fixup", "never",
                             "-o", str(out), url], [out]))
    return found


@dataclass(frozen=True)
class Result:
    wall: float  # median seconds
    ratio: float  # median, over the rounds, of the wall over the yardstick's run just before it
    rss: float  # peak MiB over the rounds
    same: str  # whether every output was what it should be


def measure(found: list[Client], rounds: int, src: Path, out_dir: Path) -> dict[str, Result]:
    """Each client's figures; ``found[0]`` is the yardstick, run again before each other client.

    Pairs keep a ratio meaningful when the machine's speed drifts between runs (on a shared
    machine it does, by tens of percent). Every output is checked: the clear stream, or for curl,
    which decrypts nothing, the encrypted segments as served."""
    clear = (src / "clear.sha256").read_text().strip()
    served = sha256([src / name for name in segments(src)])
    yardstick = found[0]
    runs: dict[str, list[tuple[float, float]]] = {c.name: [] for c in found}
    ratios: dict[str, list[float]] = {c.name: [] for c in found}
    same: dict[str, bool] = {c.name: True for c in found}

    def run(client: Client) -> float:
        for path in (*client.outputs, *client.before, out_dir / "out.ts"):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        subprocess.run(["sync"], check=False)
        runs[client.name].append(timed(client.command, out_dir))
        same[client.name] &= sha256(client.outputs) == (served if client.encrypted else clear)
        return runs[client.name][-1][0]

    for _ in range(rounds):
        for client in found[1:]:
            base = run(yardstick)
            ratios[client.name].append(run(client) / base)
    ratios[yardstick.name] = [1.0]
    said = {c.name: ("yes" if same[c.name] else "**no**") + (" (the encrypted bytes, as served)" if c.encrypted else "")
            for c in found}
    return {c.name: Result(statistics.median(w for w, _ in runs[c.name]), statistics.median(ratios[c.name]),
                           max(r for _, r in runs[c.name]), said[c.name]) for c in found}


def table(results: dict[str, Result], yardstick: str, size: int, title: str) -> list[str]:
    ratio = "× floor" if "floor" in yardstick else f"× {THREADS} curls"
    rows = [title, "", f"| client | wall (s) | MB/s | {ratio} | peak RSS (MiB) | sha256 = clear stream |",
            "|---|---:|---:|---:|---:|---|"]
    for name, r in results.items():
        rows.append(f"| {name} | {r.wall:.2f} | {size / r.wall / 1e6:,.0f} | {r.ratio:.2f} | {r.rss:.0f} | {r.same} |")
    return rows


def http_tables(src: Path, out_dir: Path, *, rounds: int, latency: float, streamlink: str | None = None,
                yt_dlp: str | None = None, prefer_nginx: bool = True) -> list[str]:
    """The two tables, in Markdown, under a line that says which server served them."""
    streamlink = streamlink or shutil.which("streamlink")
    yt_dlp = yt_dlp or shutil.which("yt-dlp")
    size = sum((src / name).stat().st_size for name in segments(src))
    missing = [name for name, path in (("streamlink", streamlink), ("yt-dlp", yt_dlp)) if not path]
    lines = []
    with served(src.parent, latency, prefer_nginx=prefer_nginx) as where:
        lines += [f"Over HTTP on 127.0.0.1: {len(segments(src))} segments, {size / 1e6:.0f} MB; output to {out_dir}; "
                  f"median of {rounds} rounds" + (f"; not installed: {', '.join(missing)}" if missing else ""), ""]
        fast = clients(src, where.url, out_dir, floor=True, streamlink=streamlink, yt_dlp=yt_dlp, local=True)
        lines += table(measure(fast, rounds, src, out_dir), fast[0].name, size,
                       f"At the wire's speed, served by {where.server}:")
        lines.append("")
        slow = clients(src, where.slow_url, out_dir, floor=False, streamlink=streamlink, yt_dlp=yt_dlp, local=False)
        lines += table(measure(slow, rounds, src, out_dir), slow[0].name, size,
                       f"With {latency * 1000:.0f} ms added to every answer, served by {where.slow_server}:")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=720, help="size of the stream (default 720)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds added to every answer (default 0.05)")
    ap.add_argument("--data", type=Path, default=ROOT / "bench-data", help="where the generated streams live")
    ap.add_argument("--streamlink", help="the streamlink to compare with (default: the one on PATH, if any)")
    ap.add_argument("--yt-dlp", dest="yt_dlp", help="the yt-dlp to compare with (default: the one on PATH, if any)")
    ap.add_argument("--no-nginx", action="store_true", help="serve with the test suite's server even if nginx is there")
    ap.add_argument("--package-root", type=Path, default=ROOT,
                    help="the checkout whose hlsdecrypt is measured (default: this one), e.g. to compare with an older")
    args = ap.parse_args()
    ENV["PYTHONPATH"] = str(args.package_root.resolve())
    src = args.data / f"s{args.mb}"
    if not (src / "clear.sha256").exists():
        subprocess.run([sys.executable, str(ROOT / "benchmarks/make_stream.py"), str(src), "--mb", str(args.mb)],
                       check=True)
    with tempfile.TemporaryDirectory(dir=args.data) as tmp:
        print("\n".join(http_tables(src, Path(tmp), rounds=args.rounds, latency=args.latency,
                                    streamlink=args.streamlink, yt_dlp=args.yt_dlp, prefer_nginx=not args.no_nginx)))


if __name__ == "__main__":
    main()
