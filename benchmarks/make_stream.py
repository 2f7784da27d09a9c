#!/usr/bin/env python3
"""Build a large encrypted HLS stream for the benchmarks (never committed: it is generated).

The media is real: ffmpeg encodes a noisy 640x360 test card (4 Mbit/s, 6 s segments of about
3 MB; noise so that it is as incompressible as camera footage), as long as the size asked for
needs. ``--synthetic`` makes TS-shaped random data instead (188-byte packets with the sync
byte), for a machine without ffmpeg. The segments are then encrypted with AES-128-CBC under a
key that rotates every ``--rotate`` segments, on implicit IVs (pycryptodome's CBC mode, not
hlsdecrypt's code). The clear stream's sha256 is written beside it, so a benchmark can check
its output byte for byte. Deterministic for the same arguments and ffmpeg.

    python3 benchmarks/make_stream.py bench-data/s720 --mb 720
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

BITRATE_MBIT = 4.0
FIRST_SEQUENCE = 1000


def ffmpeg_segments(work: Path, mb: float) -> list[Path]:
    seconds = int(mb * 8 / (BITRATE_MBIT + 0.1)) + 1
    subprocess.run([
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency=300:sample_rate=44100:duration={seconds}",
        "-vf", "noise=alls=40:allf=t", "-c:v", "libx264", "-preset", "ultrafast",
        "-b:v", f"{BITRATE_MBIT}M", "-maxrate", f"{BITRATE_MBIT}M", "-bufsize", f"{2 * BITRATE_MBIT}M", "-g", "50",
        "-c:a", "aac", "-b:a", "96k", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
        "-f", "hls", "-hls_time", "6", "-hls_list_size", "0", "-hls_segment_filename", "c%05d.ts", "c.m3u8",
    ], cwd=work, check=True)
    return sorted(work.glob("c*.ts"))


def synthetic_segments(work: Path, mb: float) -> list[Path]:
    rng = random.Random(2026)
    size = 3_000_000 // 188 * 188
    paths = []
    for i in range(int(mb * 1e6 // size) + 1):
        data = bytearray(rng.randbytes(size))
        data[0::188] = b"\x47" * (size // 188)
        data[1::188] = b"\x01" * (size // 188)  # no payload-unit start: no table to check
        data[3::188] = b"\x10" * (size // 188)
        paths.append(work / f"c{i:05d}.ts")
        paths[-1].write_bytes(data)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--mb", type=float, default=720, help="size of the stream in MB (default 720)")
    ap.add_argument("--rotate", type=int, default=20, help="a new key every N segments (default 20)")
    ap.add_argument("--synthetic", action="store_true", help="TS-shaped random data instead of ffmpeg media")
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        use_ffmpeg = not args.synthetic and shutil.which("ffmpeg")
        clear_paths = (ffmpeg_segments if use_ffmpeg else synthetic_segments)(Path(tmp), args.mb)
        clear_hash = hashlib.sha256()
        keys = {}
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:6", f"#EXT-X-MEDIA-SEQUENCE:{FIRST_SEQUENCE}"]
        total = 0
        for i, path in enumerate(clear_paths):
            if i % args.rotate == 0:
                name = f"key{i // args.rotate}"
                key = hashlib.sha256(name.encode()).digest()[:16]
                (out / f"{name}.bin").write_bytes(key)
                keys[name] = key.hex()
                lines.append(f'#EXT-X-KEY:METHOD=AES-128,URI="{name}.bin"')
            clear = path.read_bytes()
            total += len(clear)
            clear_hash.update(clear)
            iv = (FIRST_SEQUENCE + i).to_bytes(16, "big")
            (out / f"seg{i:05d}.ts").write_bytes(AES.new(key, AES.MODE_CBC, iv=iv).encrypt(pad(clear, 16)))
            lines += ["#EXTINF:6.000,", f"seg{i:05d}.ts"]
        lines.append("#EXT-X-ENDLIST")
    (out / "index.m3u8").write_text("\n".join(lines) + "\n")
    (out / "keys.json").write_text(json.dumps(keys, indent=2) + "\n")  # key name (the API's KeyID) -> hex
    (out / "clear.sha256").write_text(clear_hash.hexdigest() + "\n")
    kind = "ffmpeg media" if use_ffmpeg else "synthetic"
    print(f"{out}: {len(clear_paths)} segments, {total / 1e6:.0f} MB clear ({kind}), {len(keys)} keys")


if __name__ == "__main__":
    main()
