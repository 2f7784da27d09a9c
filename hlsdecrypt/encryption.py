"""``encrypt``: the inverse of decrypt, for building test streams.

Encrypts a clear HLS stream with AES-128 the way packagers do, with the layouts that
decryptors get wrong: key rotation, implicit, explicit or all-zero IVs, KeyID-style key URIs
(as the live service writes them), encrypted init sections. Writes the segments, the
playlist, the key files (for plain key URIs) and ``keys.json`` (mode 0600), the JSON that
``--keys`` reads.
"""

from __future__ import annotations

import math
import posixpath
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .crypto import DataKey, encrypt_cbc
from .defaults import DEFAULT_KEY_URI, IV_MODES
from .errors import InputError, UsageError, plural
from .fetch import Fetcher
from .keystore import read_keys, write_key_file, write_keys
from .pipeline import load_media_playlist
from .playlist import Part


@dataclass(frozen=True)
class EncryptResult:
    playlist: Path
    segments: int
    keys: int


def encrypt(source: str, output: str, *, fetcher: Fetcher | None = None, rotate: int = 0, iv: str = "implicit",
            key_uri: str = DEFAULT_KEY_URI, keys_file: str | None = None, variant: str = "best") -> EncryptResult:
    """Encrypt the clear stream at ``source`` into the folder ``output``: a new key every ``rotate``
    segments (0: one key), IVs ``implicit`` (the media sequence), ``explicit`` (random, one per
    segment) or ``zero``. ``key_uri`` is a template: ``{n}`` is the key's number, ``{key_id}`` a
    KeyID. Keys are random, or taken in order from ``keys_file`` (JSON of KeyID -> hex)."""
    if iv not in IV_MODES:
        raise UsageError(f"iv is one of {', '.join(IV_MODES)}", option="iv")
    if rotate < 0:
        raise UsageError("rotate is 0 or more", option="rotate")
    iv_mode, out_dir = iv, output
    try:
        given_keys = read_keys(keys_file, "keys_file") if keys_file else None
    except FileNotFoundError:
        raise UsageError(f"keys_file {keys_file}: no such file", option="keys_file") from None
    fetcher = fetcher or Fetcher()
    playlist, _ = load_media_playlist(source, fetcher, variant=variant)
    encrypted = next((p.key for p in playlist.parts if p.key), None)
    if encrypted:
        raise InputError(f"{playlist.uri}: line {encrypted.line}: the stream is already encrypted")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise UsageError(f"{out_dir}: not empty; encrypt writes into an empty or new folder")
    keys = _KeyMaker(key_uri, given_keys, out)
    first_sequence = playlist.segments[0].sequence
    lines = ["#EXTM3U", "#EXT-X-VERSION:7" if any(p.is_init for p in playlist.parts) else "#EXT-X-VERSION:3",
             f"#EXT-X-TARGETDURATION:{max(1, math.ceil(max(p.duration for p in playlist.segments)))}",
             f"#EXT-X-MEDIA-SEQUENCE:{first_sequence}"]
    current: tuple[str, bytes | None] | None = None  # the key tag in force: URI and explicit IV
    for part, index in zip(playlist.parts, _segment_numbers(playlist.parts)):
        uri, key = keys.get(index // rotate if rotate else 0)
        explicit: bytes | None = None  # None: implicit, the segment's sequence number
        if part.is_init or iv_mode == "explicit":
            explicit = secrets.token_bytes(16)
        elif iv_mode == "zero":
            explicit = bytes(16)
        if part.discontinuity:
            lines.append("#EXT-X-DISCONTINUITY")
        if current != (uri, explicit):
            attribute = f",IV=0x{explicit.hex()}" if explicit is not None else ""
            lines.append(f'#EXT-X-KEY:METHOD=AES-128,URI="{uri}"{attribute}')
            current = (uri, explicit)
        name = _file_name(part, index)
        data = bytes(fetcher.read(part.uri, part.byterange))
        # init parts always have an explicit IV
        used_iv = explicit if explicit is not None else (part.sequence or 0).to_bytes(16, "big")
        (out / name).write_bytes(encrypt_cbc(data, key, used_iv))
        if part.is_init:
            lines.append(f'#EXT-X-MAP:URI="{name}"')
        else:
            lines += [f"#EXTINF:{part.duration:.6f},", name]
    lines.append("#EXT-X-ENDLIST")
    (out / "index.m3u8").write_text("\n".join(lines) + "\n")
    write_keys(str(out / "keys.json"), keys.exported)
    return EncryptResult(out / "index.m3u8", len(playlist.segments), keys.count)


def _segment_numbers(parts: tuple[Part, ...]) -> list[int]:
    """Each part's segment number from 0; an init section takes that of the segment after it."""
    first = next(p.sequence for p in parts if p.sequence is not None)
    numbers, following = [], 0
    for part in reversed(parts):
        if part.sequence is not None:
            following = part.sequence - first
        numbers.append(following)
    return numbers[::-1]


def _file_name(part: Part, index: int) -> str:
    extension = posixpath.splitext(urlsplit(part.uri).path)[1] or (".mp4" if part.is_init else ".ts")
    return f"init{extension}" if part.is_init else f"seg{index:05d}{extension}"


class _KeyMaker:
    """Keys in order: the given ones, else fresh random keys with fresh random KeyIDs."""

    def __init__(self, template: str, given: dict[str, DataKey] | None, out: Path):
        self.template, self.out = template, out
        self.given = list((given or {}).items())
        self.made: list[tuple[str, DataKey]] = []  # (URI, key)
        self.exported: dict[str, DataKey] = {}

    @property
    def count(self) -> int:
        return len(self.made)

    def get(self, number: int) -> tuple[str, DataKey]:
        while len(self.made) <= number:
            self._make(len(self.made))
        return self.made[number]

    def _make(self, n: int) -> None:
        if self.given:
            if n >= len(self.given):
                raise UsageError(f"keys_file gives {plural(len(self.given), 'key')}; the stream needs more",
                                 option="keys_file")
            key_id, key = self.given[n]
        else:
            key_id, key = secrets.token_hex(16), DataKey(secrets.token_bytes(16))
        uri = self.template.format(n=n, key_id=key_id)
        if "{key_id}" in self.template:
            self.exported[key_id] = key
        else:
            if "://" not in uri:
                write_key_file(str(self.out / uri), key)
            self.exported[uri] = key
        self.made.append((uri, key))
