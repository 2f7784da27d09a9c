#!/usr/bin/env python3
"""Build a very long encrypted playlist, to show that every command costs time linear in its length.

The shape is the live service's, stretched to a day and more: ``--segments`` segments (default
100,000) of ``--period`` segments per key (default 30: 3,334 keys), KeyIDs in ``key_id=`` key
URIs, an all-zero explicit IV, ``EXT-X-PROGRAM-DATE-TIME`` on each key change and segment URIs
with query strings. The media is tiny (one 188-byte MPEG-TS packet per segment, so one AES
block of padding): what is measured is the cost of the playlist, not of the bytes.

Local references must be regular files inside the playlist's folder; with one IV per key every
segment under a key has the same ciphertext, so each key has one file and its segments are hard
links to it: 100,000 names, 3,334 files, 13 MB of disk. ``keys.json`` maps each KeyID to its key
(for ``--keys``), and ``clear.sha256`` is the sha256 of the whole clear stream.

    python3 benchmarks/make_long_playlist.py bench-data/long --segments 100000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path

from Crypto.Cipher import AES
from Crypto.Util.Padding import pad

FIRST_SEQUENCE = 1_000_000
SEGMENT_SECONDS = 2
QUERY = "?ps=11&app=live&stream=long&vhost=push.example.com"


def ts_packet(n: int) -> bytes:
    """A clear MPEG-TS packet: sync byte, PID 0x100, payload only, no table (so no CRC to check)."""
    return bytes([0x47, 0x01, 0x00, 0x10 | (n & 0x0F)]) + n.to_bytes(8, "big") * 23


def key_id(n: int) -> str:
    return hashlib.sha256(f"long playlist key {n}".encode()).hexdigest()[:26]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--segments", type=int, default=100_000, help="segments in the playlist (default 100,000)")
    ap.add_argument("--period", type=int, default=30, help="segments per key (default 30, a minute of 2 s segments)")
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    zero_iv = bytes(16)
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{SEGMENT_SECONDS}",
             f"#EXT-X-MEDIA-SEQUENCE:{FIRST_SEQUENCE}"]
    keys: dict[str, str] = {}
    clear_hash = hashlib.sha256()
    key_file = ""
    for i in range(args.segments):
        if i % args.period == 0:
            n = i // args.period
            kid = key_id(n)
            key = hashlib.sha256(kid.encode()).digest()[:16]
            keys[kid] = key.hex()
            clear = ts_packet(n)
            key_file = f"k{n:05d}.ts"
            (out / key_file).write_bytes(AES.new(key, AES.MODE_CBC, iv=zero_iv).encrypt(pad(clear, 16)))
            hours, rest = divmod(i * SEGMENT_SECONDS, 3600)
            day, hours = divmod(hours, 24)
            when = f"2026-01-{1 + day:02d}T{hours:02d}:{rest // 60:02d}:{rest % 60:02d}.000+08:00"
            key_uri = f"https://kms.example.com/get_hls_enc_key?key_id={kid}"
            lines += [f"#EXT-X-PROGRAM-DATE-TIME:{when}",
                      f'#EXT-X-KEY:METHOD=AES-128,URI="{key_uri}",IV=0x{zero_iv.hex()}']
        name = f"seg{FIRST_SEQUENCE + i}.ts"
        os.link(out / key_file, out / name)
        clear_hash.update(clear)
        lines += [f"#EXTINF:{SEGMENT_SECONDS}.000,", name + QUERY]
    lines.append("#EXT-X-ENDLIST")
    (out / "index.m3u8").write_text("\n".join(lines) + "\n")
    (out / "keys.json").write_text(json.dumps(keys, indent=1) + "\n")
    (out / "clear.sha256").write_text(clear_hash.hexdigest() + "\n")
    size = (out / "index.m3u8").stat().st_size
    print(f"{out}: {args.segments:,} segments, {len(keys):,} keys, playlist {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
