"""What keys a stream needs: each distinct key with the parts that use it, and exporting them."""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from typing import BinaryIO

from .errors import plural
from .fetch import Fetcher
from .keys import KeyChain, key_chain
from .keystore import write_keys
from .output import check_folder
from .pipeline import load_media_playlist
from .playlist import KeyRef, MediaPlaylist


@dataclass(frozen=True)
class KeyUse:
    name: str  # the KeyID, the key URI as written, or "key on line N" for a key written in the playlist
    kind: str  # "KeyID", "key URI" or "inline"
    parts: int  # parts it decrypts (EXT-X-GAP segments, never fetched, not counted)
    first_line: int
    ref: KeyRef


@dataclass(frozen=True)
class KeyListing:
    source: str
    playlist: MediaPlaylist
    keys: tuple[KeyUse, ...]
    encrypted: int  # parts
    clear: int  # parts

    def table(self) -> str:
        width = max([len(k.name) for k in self.keys] + [3])
        lines = [f"{'KEY':<{width}}  {'KIND':<7}  {'PARTS':>5}  FIRST LINE"]
        lines += [f"{k.name:<{width}}  {k.kind:<7}  {k.parts:>5}  {k.first_line}" for k in self.keys]
        lines.append(f"{plural(len(self.keys), 'key')}, {plural(self.encrypted, 'encrypted part')}, "
                     f"{self.clear} clear")
        return "\n".join(lines) + "\n"


def list_keys(source: str, *, fetcher: Fetcher | None = None, variant: str = "best",
              key_id_param: str | None = None) -> KeyListing:
    """The distinct keys of the stream at ``source``, in order of first use (one pass: linear)."""
    playlist, _ = load_media_playlist(source, fetcher or Fetcher(), variant=variant, key_id_param=key_id_param)
    return _listing(source, playlist)


def _listing(source: str, playlist: MediaPlaylist) -> KeyListing:
    users = Counter(p.key.identity for p in playlist.parts if p.key and not p.gap)
    uses = tuple(KeyUse(ref.key_id or ref.shown_uri, "KeyID" if ref.key_id else "inline" if ref.inline else "key URI",
                        users[ref.identity], ref.line, ref) for ref in playlist.keys)
    clear = sum(1 for p in playlist.parts if p.key is None and not p.gap)
    return KeyListing(source, playlist, uses, sum(users.values()), clear)


def export_keys(source: str, output: str | BinaryIO, *, keys: KeyChain | None = None,
                fetcher: Fetcher | None = None, variant: str = "best", key_id_param: str | None = None) -> KeyListing:
    """Fetch every key of the stream and write them to ``output`` as the JSON ``keys_file`` reads
    (KeyID, or key URI, -> 32 hex digits; a file is created 0600). The one explicit key export."""
    if isinstance(output, str):
        check_folder(output, "output")  # before the keys are fetched, which may take minutes
    fetcher = fetcher or Fetcher()
    playlist, _ = load_media_playlist(source, fetcher, variant=variant, key_id_param=key_id_param)
    listing = _listing(source, playlist)
    with nullcontext(keys) if keys is not None else key_chain(fetcher=fetcher) as chain:
        chain.prefetch(p for p in playlist.parts if not p.gap)
        write_keys(output, {use.ref.key_id or use.ref.uri: chain.get(use.ref) for use in listing.keys})
    return listing
