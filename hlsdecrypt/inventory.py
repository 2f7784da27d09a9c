"""What keys a stream needs: each distinct key with the parts that use it, and exporting them.

Of a master playlist, the stream is the chosen variant and the renditions it plays with, as
``decrypt`` writes them: their keys are what a decrypt of it needs.
"""

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
from .pipeline import load_rendition, load_stream
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
    return _listing(source, *_playlists(source, fetcher or Fetcher(), variant, key_id_param))


def _playlists(source: str, fetcher: Fetcher, variant: str, key_id_param: str | None) -> list[MediaPlaylist]:
    stream = load_stream(source, fetcher, variant=variant, key_id_param=key_id_param)
    return [stream.playlist, *(load_rendition(r, fetcher, key_id_param=key_id_param) for r in stream.renditions)]


def _listing(source: str, *playlists: MediaPlaylist) -> KeyListing:
    parts = [p for playlist in playlists for p in playlist.parts if not p.gap]
    users = Counter(p.key.identity for p in parts if p.key)
    first: dict[str, KeyRef] = {}
    for playlist in playlists:
        for ref in playlist.keys:
            first.setdefault(ref.identity, ref)
    written = Counter(ref.uri for ref in first.values() if not ref.key_id)
    uses = tuple(KeyUse(_name(ref, ambiguous=written[ref.uri] > 1), _kind(ref), users[ref.identity], ref.line, ref)
                 for ref in first.values())
    clear = sum(1 for p in parts if p.key is None)
    return KeyListing(source, playlists[0], uses, sum(users.values()), clear)


def _name(ref: KeyRef, *, ambiguous: bool) -> str:
    """The KeyID; else the key URI as written, or as resolved where two playlists write the same
    (``key.bin`` beside the video and beside the audio): names that ``keys_file`` finds again."""
    if ref.key_id:
        return ref.key_id
    return ref.resolved_uri if ambiguous and not ref.inline else ref.shown_uri


def _kind(ref: KeyRef) -> str:
    return "KeyID" if ref.key_id else "inline" if ref.inline else "key URI"


def export_keys(source: str, output: str | BinaryIO, *, keys: KeyChain | None = None,
                fetcher: Fetcher | None = None, variant: str = "best", key_id_param: str | None = None) -> KeyListing:
    """Fetch every key of the stream and write them to ``output`` as the JSON ``keys_file`` reads
    (KeyID, or key URI, -> 32 hex digits; a file is created 0600). The one explicit key export."""
    if isinstance(output, str):
        check_folder(output, "output")  # before the keys are fetched, which may take minutes
    fetcher = fetcher or Fetcher()
    playlists = _playlists(source, fetcher, variant, key_id_param)
    listing = _listing(source, *playlists)
    with nullcontext(keys) if keys is not None else key_chain(fetcher=fetcher) as chain:
        chain.prefetch(p for playlist in playlists for p in playlist.parts if not p.gap)
        write_keys(output, {use.name if use.kind != "inline" else use.ref.uri: chain.get(use.ref)
                            for use in listing.keys})
    return listing
