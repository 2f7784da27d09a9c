#!/usr/bin/env python3
"""Build a large encrypted HLS stream for the benchmarks (never committed: it is generated).

Segments are TS-sized synthetic data shaped like MPEG-TS (188-byte packets with the sync byte
and random payload, which compresses and caches like real media does: not at all), encrypted
with AES-128-CBC under a key that rotates every ``--rotate`` segments, implicit IVs. The clear
stream's sha256 is written beside it, so a benchmark can check its output byte for byte.
Deterministic: the same arguments give the same bytes.

    python3 benchmarks/make_stream.py bench-data/large --segments 240 --segment-mb 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad


def ts_like(rng: random.Random, size: int) -> bytes:
    packets = size // 188
    payload = rng.randbytes(packets * 188)
    view = bytearray(payload)
    view[0::188] = b"\x47" * packets
    view[1::188] = b"\x01" * packets  # no payload-unit-start: no table to check
    view[3::188] = b"\x10" * packets
    return bytes(view)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--segments", type=int, default=240)
    ap.add_argument("--segment-mb", type=float, default=3.0)
    ap.add_argument("--rotate", type=int, default=20, help="a new key every N segments")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(2026)
    size = int(args.segment_mb * 1_000_000)
    clear_hash = hashlib.sha256()
    keys = {}
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:6", "#EXT-X-MEDIA-SEQUENCE:1000"]
    for i in range(args.segments):
        if i % args.rotate == 0:
            name = f"key{i // args.rotate}.bin"
            key = hashlib.sha256(name.encode()).digest()[:16]
            (out / name).write_bytes(key)
            keys[name] = key.hex()
            lines.append(f'#EXT-X-KEY:METHOD=AES-128,URI="{name}"')
        clear = ts_like(rng, size)
        clear_hash.update(clear)
        iv = (1000 + i).to_bytes(16, "big")
        (out / f"seg{i:05d}.ts").write_bytes(AES.new(key, AES.MODE_CBC, iv=iv).encrypt(pad(clear, 16)))
        lines += ["#EXTINF:6.000,", f"seg{i:05d}.ts"]
    lines.append("#EXT-X-ENDLIST")
    (out / "index.m3u8").write_text("\n".join(lines) + "\n")
    (out / "keys.json").write_text(json.dumps(keys, indent=2) + "\n")
    (out / "clear.sha256").write_text(clear_hash.hexdigest() + "\n")
    print(f"{out}: {args.segments} segments, {args.segments * size / 1e6:.0f} MB clear, {len(keys)} keys")


if __name__ == "__main__":
    main()
