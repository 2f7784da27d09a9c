"""Playlists: parse M3U8 text into a typed, frozen plan of the parts to fetch, decrypt and write.

The m3u8 library does the tokenising; everything it returns as text (IVs, byte ranges, key
URIs) is converted here, once, into the dataclasses below, together with the playlist line
each part came from, so that later errors can name it.

Playlists in the wild carry tags that decryption never reads and that the library cannot
always parse (a decimal TARGETDURATION, a date that is not one, IPTV attributes in EXTINF,
low-latency parts). ``_clean`` hides those from the library, and notes under ``-v`` the ones it
could not have parsed.

Nearly every segment of a recording is an EXTINF line and its URI, nothing else; the library
spends ~10 µs on each (its forty tag tests, a dict of state), a day-long recording's 100,000
segments a second. ``_clean`` leaves such plain segments out of what it sees, and
``_LineStamper`` adds them where the library would have, as the library would have made them,
and gives the library's line numbers back their places in the playlist: a test holds the two
ways to the same plan, playlist for playlist.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os.path
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Callable
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit, urlunsplit

from .errors import InputError, UnsupportedEncryption
from .uris import as_folder, is_url, scheme_of

log = logging.getLogger("hlsdecrypt")

#: Query parameters that carry a KeyID in a key URI; the live service writes ``key_id``.
KEY_ID_PARAMS = ("key_id", "keyid", "kid")


@dataclass(frozen=True, slots=True)
class ByteRange:
    offset: int
    length: int


@dataclass(frozen=True)
class KeyRef:
    """Where a key comes from: the key URI as written and resolved, and the KeyID it carries."""

    uri: str
    resolved_uri: str
    key_id: str | None
    iv: bytes | None  # the explicit IV attribute, if any
    line: int

    @cached_property  # asked for every part that uses the key: computed once
    def inline(self) -> bool:
        """A ``data:`` URI: the key itself is written in the playlist, so the URI is never shown."""
        return scheme_of(self.uri) == "data"

    @cached_property
    def identity(self) -> str:
        """Two key tags with the same identity name the same key (IVs may differ)."""
        if self.key_id:
            return self.key_id
        if self.inline:  # journals keep identities: a digest tells inline keys apart without holding them
            return "data:" + hashlib.sha256(b"hlsdecrypt data: URI\0" + self.uri.encode()).hexdigest()[:32]
        return self.resolved_uri

    @property
    def name(self) -> str:
        """How messages name the key: by KeyID where there is one, else by its URI (or its line, for data:)."""
        if self.key_id:
            return f"KeyID {self.key_id}"
        return f"key on line {self.line}" if self.inline else f"key {self.uri}"

    @property
    def shown_uri(self) -> str:
        """The key URI as listings may show it."""
        return self.name if self.inline else self.uri

    def __repr__(self) -> str:
        if self.inline:
            return f"KeyRef(<data: URI>, iv={self.iv!r}, line={self.line})"
        return (f"KeyRef(uri={self.uri!r}, resolved_uri={self.resolved_uri!r}, key_id={self.key_id!r}, "
                f"iv={self.iv!r}, line={self.line})")


@dataclass(frozen=True, slots=True)  # slots: a long recording holds 100,000 of them
class Part:
    """One piece of the output, in order: an init section or a media segment."""

    uri: str  # resolved: an http(s) URL or a local path
    line: int
    sequence: int | None  # media sequence number; None for an init section
    byterange: ByteRange | None = None
    key: KeyRef | None = None
    iv: bytes | None = None  # the IV in force, explicit or implicit
    duration: float = 0.0
    discontinuity: bool = False  # an EXT-X-DISCONTINUITY precedes it
    gap: bool = False  # EXT-X-GAP: the server has nothing there, so it is never fetched

    @property
    def is_init(self) -> bool:
        return self.sequence is None

    @property
    def cipher(self) -> tuple[KeyRef, bytes] | None:
        """The key and IV of an encrypted part; None for a clear one."""
        return (self.key, self.iv) if self.key is not None and self.iv is not None else None

    @property
    def label(self) -> str:
        what = "init section" if self.is_init else f"segment {self.sequence}"
        return f"{what} (line {self.line})"


@dataclass(frozen=True)
class Variant:
    uri: str
    bandwidth: int
    resolution: str | None
    line: int
    groups: tuple[tuple[str, str], ...] = ()  # (TYPE, GROUP-ID) of the renditions it plays with


@dataclass(frozen=True)
class Rendition:
    """An ``EXT-X-MEDIA`` rendition with a playlist of its own: an audio track, subtitles."""

    type: str  # AUDIO, SUBTITLES or VIDEO
    group: str
    name: str
    language: str | None
    uri: str  # resolved
    default: bool
    line: int

    @property
    def label(self) -> str:
        """``audio English``: how messages, reports and file names tell renditions apart."""
        return f"{self.type.lower()} {self.name}"


@dataclass(frozen=True)
class MediaPlaylist:
    uri: str
    parts: tuple[Part, ...]
    ended: bool  # EXT-X-ENDLIST seen: a complete recording, not a live window

    # computed once: a day-long recording has 100,000 parts, and these are asked for often
    @cached_property
    def segments(self) -> tuple[Part, ...]:
        return tuple(p for p in self.parts if not p.is_init)

    @cached_property
    def keys(self) -> tuple[KeyRef, ...]:
        """One KeyRef per distinct key, in order of first use."""
        first: dict[str, KeyRef] = {}
        for part in self.parts:
            if part.key:
                first.setdefault(part.key.identity, part.key)
        return tuple(first.values())


@dataclass(frozen=True)
class MasterPlaylist:
    uri: str
    variants: tuple[Variant, ...]
    renditions: tuple[Rendition, ...] = ()

    def renditions_of(self, variant: Variant) -> tuple[Rendition, ...]:
        """The renditions ``variant`` plays with, in the master's order."""
        return tuple(r for r in self.renditions if (r.type, r.group) in variant.groups)


class _LineStamper:
    """A custom-tag hook for ``m3u8.parse`` that records the line of each key, map and segment.

    The hook runs before the library parses a tag line, so objects created by a tag are
    stamped on the next tag line (or by ``finish``); segments keep references to these same
    dicts, so the stamps reach them.

    It also parses EXT-X-KEY itself: the library keeps only the last key tag, but several may
    apply to one segment, one per KEYFORMAT (RFC 8216 §4.3.2.4), and the identity one is the
    one to use whatever their order.
    """

    def __init__(self, plain: list[tuple[int, float, str]] | None = None, lines: list[int] | None = None) -> None:
        self.last_line = 0
        self._plain = plain or []  # (EXTINF line, duration, URI) of each plain segment, in order (see _clean)
        self._made = 0  # plain segments made so far
        self._lines = lines  # the playlist's line number of each line the library sees, when they differ
        self._data: dict = {}
        self._state: dict = {}
        self._pending: list[tuple[str, int]] = []
        self._keys: dict[str, dict] = {}  # KEYFORMAT -> the EXT-X-KEY in force for it

    def __call__(self, line: str, lineno: int, data: dict, state: dict) -> bool:
        if line == "#":  # hidden (see _clean): nothing for the library to try its forty tag names on
            return True
        if self._lines is not None:
            lineno = self._lines[lineno - 1]
        self._data, self._state = data, state
        self.finish(before=lineno)
        self.last_line = lineno
        if line.partition(":")[0] == "#EXT-X-KEY":
            state["current_key"] = self._key_in_force(line, lineno)
            return True  # the library would keep only this tag
        if line.startswith("#EXT-X-MAP:"):
            self._pending.append(("current_segment_map", lineno))
            state["_key_at_map"] = state.get("current_key")
        elif line.startswith(("#EXTINF", "#EXT-X-BYTERANGE")):
            segment = state.setdefault("segment", {})
            segment.setdefault("_line", lineno)
            if line.startswith("#EXTINF"):
                segment["_extinf"] = lineno  # for an error about the duration
        return False

    def _key_in_force(self, line: str, lineno: int) -> dict:
        """Each tag applies until the next one of its KEYFORMAT; METHOD=NONE ends them all."""
        key: dict = _attributes(line.partition(":")[2])  # the library's shape: it gets "_line" too
        key["_line"] = lineno
        if (key.get("method") or "").upper() == "NONE":
            self._keys.clear()
            return key
        self._keys[key.get("keyformat") or "identity"] = key
        return self._keys.get("identity", key)  # without an identity key, this one (to be refused)

    def finish(self, before: float = math.inf) -> None:
        """Stamp what the last tag made, then make the plain segments before line ``before``, where
        the library would have: each line between is one it passes over, or a URI it ends a
        segment of its own with (whose tags came after these segments)."""
        state = self._state
        for slot, lineno in self._pending:
            if state.get(slot) is not None:
                state[slot]["_line"] = lineno
                if slot == "current_segment_map":
                    state[slot]["_key"] = state.pop("_key_at_map", None)
        self._pending.clear()
        plain, made = self._plain, self._made
        if made == len(plain) or plain[made][0] > before:
            return
        segments, key, init = self._data["segments"], state.get("current_key"), state.get("current_segment_map")
        while made < len(plain) and plain[made][0] < before:
            lineno, duration, uri = plain[made]
            segment = {"duration": duration, "_line": lineno, "uri": uri, "_uri_line": lineno + 1}
            if key:
                segment["key"] = key
            if init:
                segment["init_section"] = init
            segments.append(segment)
            made += 1
        self._made = made


_ATTRIBUTE = re.compile(r'([A-Za-z0-9-]+)=("[^"]*"|[^,]*)')


def _attributes(text: str) -> dict[str, str]:
    """An attribute list as the library names it: ``KEYFORMAT="x"`` -> ``{"keyformat": "x"}``."""
    found = {}
    for match in _ATTRIBUTE.finditer(text):
        name, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        found[name.lower().replace("-", "_")] = value.strip()
    return found


def parse(text: str, uri: str, *, key_id_param: str | None = None, append_url_params: bool = False,
          plain_segments: bool = True) -> MediaPlaylist | MasterPlaylist:
    """Parse playlist text fetched from ``uri`` (a URL or a local path: for a redirected playlist,
    the URL reached, since its references are relative to that). ``append_url_params``: see ``resolve``.
    ``plain_segments=False`` has the library make every segment (see the module's docstring)."""
    text = text.lstrip("\ufeff")
    lines = text.splitlines()
    first = next((n for n, line in enumerate(lines, 1) if line.strip()), 0)
    if not first:
        raise InputError(f"{uri}: empty, not an M3U8 playlist")
    if not lines[first - 1].strip().startswith("#EXTM3U"):  # blank lines before it are common: allowed
        raise InputError(f"{uri}: line {first}: not an M3U8 playlist (no #EXTM3U)")
    import m3u8  # type: ignore[import-untyped]  # here, not at the top: importing it costs more than parsing

    plain: list[tuple[int, float, str]] = []
    cleaned, seen = _clean(lines, uri, plain if plain_segments else None)
    stamper = _LineStamper(plain, seen if plain else None)
    try:
        data = m3u8.parse("\n".join(cleaned), custom_tags_parser=stamper)
    except Exception as exc:  # the library raises bare ValueErrors on malformed tags
        line = stamper.last_line or first
        bad = _shown(lines[line - 1].strip())
        raise InputError(f"{uri}: line {line}: cannot parse {bad!r} ({_shown(str(exc))})") from None
    stamper.finish()
    if data["is_variant"]:
        return _master(data, lines, uri, append_url_params)
    return _media(data, lines, uri, key_id_param, append_url_params)


#: The tags whose values decryption reads, or that shape the list of segments and variants
#: (EXT-X-MEDIA names renditions). The library sees only these; every other tag is hidden from
#: it, since nothing here reads them and its parsers for some raise on values common in the wild.
_NEEDED_TAGS = frozenset({
    "#EXTM3U", "#EXTINF", "#EXT-X-BYTERANGE", "#EXT-X-KEY", "#EXT-X-MAP", "#EXT-X-MEDIA-SEQUENCE",
    "#EXT-X-DISCONTINUITY", "#EXT-X-GAP", "#EXT-X-ENDLIST", "#EXT-X-STREAM-INF", "#EXT-X-MEDIA",
})
#: The EXT-X-STREAM-INF attributes the library converts to numbers, as it converts them.
_STREAM_INF_NUMBERS: dict[str, Callable[[str], object]] = {
    "PROGRAM-ID": int, "BANDWIDTH": lambda v: int(float(v)), "AVERAGE-BANDWIDTH": int, "FRAME-RATE": float,
}
_LEADING_NUMBER = re.compile(r"\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))")


#: Tags the library keeps for the next segment: a segment after one of them is not plain.
_FOR_NEXT_SEGMENT = frozenset({"#EXTINF", "#EXT-X-BYTERANGE", "#EXT-X-DISCONTINUITY", "#EXT-X-GAP"})


def _clean(lines: list[str], uri: str,
           plain: list[tuple[int, float, str]] | None = None) -> tuple[list[str], list[int]]:
    """The lines for the library, and the playlist's line number of each: tags decryption does not
    need become bare ``#``, EXTINF and EXT-X-STREAM-INF lose what the library cannot parse. Blank
    lines before ``#EXTM3U`` become comments, since the library would strip them and count its
    lines from there.

    With ``plain`` given, plain segments (an EXTINF line right before its URI, and no other tag of
    theirs) are left out, and put in ``plain`` with their EXTINF line, in order."""
    cleaned: list[str] = []
    numbers: list[int] = []
    parts_after = 0  # the first EXT-X-PART line since the last URI: parts of a segment still being made
    started = False
    kept_for_next = plain is None  # whether the library holds a tag for the next segment (or makes them all)
    expecting = False  # whether the library waits for a URI (after EXTINF or BYTERANGE), which takes those tags
    hidden_uri = 0  # the line of a plain segment's URI, left out with its EXTINF
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            cleaned.append("" if started else "#")
            numbers.append(n)
            continue
        started = True
        if not line.startswith("#"):
            parts_after = 0
            if n == hidden_uri:
                continue
            if expecting and plain is not None:  # else the library passes over it, and keeps what it holds
                expecting = kept_for_next = False
        tag = line.partition(":")[0] if line.startswith("#EXT") else ""
        if tag == "#EXTINF":
            line = _extinf(line, n, uri)
            if not kept_for_next and (segment := _plain_segment(line, lines, n)):
                plain.append((n, *segment))  # type: ignore[union-attr]  # kept_for_next is True without plain
                hidden_uri = n + 1
                continue
        elif tag == "#EXT-X-STREAM-INF":
            line = _stream_inf(line, n, uri)
            plain, kept_for_next = None, True  # a master playlist: the library reads it all
        elif tag == "#EXT-X-SKIP":
            raise InputError(f"{uri}: line {n}: a playlist delta update (EXT-X-SKIP) leaves out segments and their "
                             "numbers: ask for the whole playlist (without _HLS_skip)")
        elif tag and tag not in _NEEDED_TAGS:
            if tag == "#EXT-X-PART" and not parts_after:
                parts_after = n
            _note_unneeded(line, n, uri)
            line = "#"
        if tag in _FOR_NEXT_SEGMENT:
            kept_for_next = True
            expecting = expecting or tag in ("#EXTINF", "#EXT-X-BYTERANGE")
        cleaned.append(line)
        numbers.append(n)
    if parts_after:
        log.debug("%s: line %d: leaving out the parts of a segment still being made (EXT-X-PART)", uri, parts_after)
    return cleaned, numbers


def _plain_segment(extinf: str, lines: list[str], n: int) -> tuple[float, str] | None:
    """The duration and URI of the segment whose EXTINF is line ``n``, when its URI is the next line
    and the library would read the duration as it is (else None: the library then reads them)."""
    following = lines[n].strip() if n < len(lines) else ""
    if not following or following.startswith("#"):
        return None
    try:
        return float(extinf.partition(":")[2].split(",", 1)[0]), following
    except ValueError:
        return None


def _note_unneeded(line: str, n: int, uri: str) -> None:
    """Under ``-v``, name a hidden tag that the library could not have parsed: the playlist is off there."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    import m3u8

    try:
        m3u8.parse(line)
    except Exception as exc:
        log.debug("%s: line %d: ignoring %r, which decryption does not need (cannot parse it: %s)",
                  uri, n, _shown(line), _shown(str(exc) or type(exc).__name__))


def _extinf(line: str, n: int, uri: str) -> str:
    """EXTINF as the library parses it: a number, a comma, a title. IPTV lists put attributes
    (``tvg-id="x"``) between the number and the comma; decryption needs neither. An EXTINF that
    does not even begin with a number is left for the library to refuse: more is wrong there."""
    duration = line.partition(":")[2].split(",", 1)[0]
    try:
        float(duration)
        return line
    except ValueError:
        pass
    match = _LEADING_NUMBER.match(duration)
    if not match:
        return line
    log.debug("%s: line %d: reading %r as a duration of %s; decryption needs nothing else from it",
              uri, n, _shown(line), match.group(1))
    return f"#EXTINF:{match.group(1)},"


def _stream_inf(line: str, n: int, uri: str) -> str:
    """EXT-X-STREAM-INF without the numbers the library cannot read, except BANDWIDTH, which chooses the variant."""
    import m3u8

    try:
        m3u8.parse(line)
        return line
    except Exception:
        pass
    kept, dropped = [], []
    for match in _ATTRIBUTE.finditer(line.partition(":")[2]):
        name, value = match.group(1).upper(), match.group(2)
        convert = _STREAM_INF_NUMBERS.get(name)
        try:
            if convert:
                convert(value)
        except (ValueError, OverflowError):
            if name == "BANDWIDTH":
                raise InputError(f"{uri}: line {n}: bad BANDWIDTH {_shown(value)!r}") from None
            dropped.append(f"{name}={_shown(value)}")
            continue
        kept.append(match.group(0))
    log.debug("%s: line %d: ignoring %s in EXT-X-STREAM-INF (not a number; decryption does not need it)",
              uri, n, ", ".join(dropped) or "what cannot be parsed")
    return "#EXT-X-STREAM-INF:" + ",".join(kept)


_DATA_URI = re.compile(r'data:[^"\s]*', re.IGNORECASE)


def _shown(text: str, limit: int = 120) -> str:
    """Playlist text as messages may show it: a data: URI may be a key, and lines may be long."""
    text = _DATA_URI.sub("data:…", text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _master(data: dict, lines: list[str], uri: str, carry_query: bool = False) -> MasterPlaylist:
    uri_lines = [n for n, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]
    variants = []
    for i, entry in enumerate(data["playlists"]):
        info = entry.get("stream_info") or {}
        line = uri_lines[i] if i < len(uri_lines) else 0
        try:
            bandwidth = int(info.get("bandwidth") or 0)
        except (TypeError, ValueError):
            raise InputError(f"{uri}: line {line - 1}: bad BANDWIDTH {info.get('bandwidth')!r}") from None
        if not entry.get("uri"):
            raise InputError(f"{uri}: line {line}: EXT-X-STREAM-INF without a playlist URI")
        groups = tuple((kind.upper(), str(info[kind])) for kind in ("audio", "subtitles", "video") if info.get(kind))
        variants.append(Variant(resolve(uri, entry["uri"], line, carry_query=carry_query), bandwidth,
                                info.get("resolution"), line, groups))
    if not variants:
        raise InputError(f"{uri}: master playlist lists no variants")
    return MasterPlaylist(uri, tuple(variants), _renditions(data, lines, uri, carry_query))


def _renditions(data: dict, lines: list[str], uri: str, carry_query: bool) -> tuple[Rendition, ...]:
    """The ``EXT-X-MEDIA`` renditions that have a URI (the others are carried in the variants)."""
    media_lines = [n for n, line in enumerate(lines, 1) if line.lstrip().startswith("#EXT-X-MEDIA:")]
    found = []
    for entry, line in zip(data.get("media") or [], media_lines):
        kind = str(entry.get("type") or "").upper()
        if not entry.get("uri") or kind not in ("AUDIO", "SUBTITLES", "VIDEO"):
            continue
        found.append(Rendition(kind, str(entry.get("group_id") or ""), str(entry.get("name") or kind.lower()),
                               entry.get("language"), resolve(uri, entry["uri"], line, carry_query=carry_query),
                               str(entry.get("default") or "").upper() == "YES", line))
    return tuple(found)


def choose_variant(master: MasterPlaylist, choice: str) -> Variant:
    """``best`` or ``worst`` by bandwidth, or an index counted from 0 in the master's order."""
    variants = master.variants
    if choice == "best":
        return max(variants, key=lambda v: v.bandwidth)
    if choice == "worst":
        return min(variants, key=lambda v: v.bandwidth)
    if choice.isdigit() and int(choice) < len(variants):
        return variants[int(choice)]
    raise InputError(f"{master.uri}: no variant {choice!r}: choose best, worst or 0..{len(variants) - 1}")


def _media(data: dict, lines: list[str], uri: str, key_id_param: str | None, carry_query: bool = False) -> MediaPlaylist:
    parts: list[Part] = []
    keys: dict[int, tuple[dict, KeyRef | None]] = {}  # id(key dict) -> it and its KeyRef: each converted once
    range_ends: dict[str, int] = {}  # resolved URI -> end of its previous sub-range
    current_map = None
    sequence = data["media_sequence"]
    segments = data["segments"]
    for index, segment in enumerate(segments):
        segments[index] = None  # the library's dict goes as its part comes: both at once would double the peak
        seg_line = segment.get("_uri_line") or _uri_line(lines, segment.get("_line", 0))
        if not segment.get("uri"):
            raise InputError(f"{uri}: line {segment.get('_line', 0)}: segment tags with no URI after them")
        key = _key_ref(segment.get("key"), keys, uri, key_id_param, carry_query)
        iv = _iv_for(key, sequence)
        init = segment.get("init_section")
        if init is not None and init is not current_map:
            current_map = init
            if not init.get("uri"):
                raise InputError(f"{uri}: line {init.get('_line', 0)}: EXT-X-MAP without a URI")
            init_key = _key_ref(init.get("_key"), keys, uri, key_id_param, carry_query)
            init_uri = resolve(uri, init["uri"], init.get("_line", 0), carry_query=carry_query)
            parts.append(Part(
                uri=init_uri, line=init.get("_line", 0), sequence=None,
                byterange=_byterange(init.get("byterange"), init_uri, range_ends, uri, init.get("_line", 0)),
                key=init_key, iv=_iv_for(init_key, sequence),
            ))
        seg_uri = resolve(uri, segment["uri"], seg_line, carry_query=carry_query)
        duration = float(segment.get("duration") or 0.0)
        if not math.isfinite(duration):  # "nan" and "inf" parse as floats, which no JSON report may carry
            line = segment.get("_extinf", segment.get("_line", 0))  # a plain segment's first line is its EXTINF
            raise InputError(f"{uri}: line {line}: EXTINF duration {duration} is not a time")
        byterange = segment.get("byterange")
        parts.append(Part(  # in order, not by name: a day-long recording makes 100,000
            seg_uri, seg_line, sequence,
            byterange if byterange is None else _byterange(byterange, seg_uri, range_ends, uri, seg_line),
            key, iv, duration,
            bool(segment.get("discontinuity")), bool(segment.get("gap_tag")),
        ))
        sequence += 1
    return MediaPlaylist(uri, tuple(parts), bool(data["is_endlist"]))


def _uri_line(lines: list[str], start: int) -> int:
    """The line of a segment's URI: the first non-tag line after its first tag."""
    for n in range(start, len(lines)):
        stripped = lines[n].strip()
        if stripped and not stripped.startswith("#"):
            return n + 1
    return start


def _key_ref(raw: dict | None, cache: dict, uri: str, key_id_param: str | None,
             carry_query: bool = False) -> KeyRef | None:
    if raw is None:
        return None
    entry = cache.get(id(raw))
    if entry is None:  # the cache holds the dict too, so that its id stays its own
        entry = cache[id(raw)] = (raw, _convert_key(raw, uri, key_id_param, carry_query))
    return entry[1]


def _convert_key(raw: dict, uri: str, key_id_param: str | None, carry_query: bool = False) -> KeyRef | None:
    line = raw.get("_line", 0)
    method = (raw.get("method") or "").upper()
    if method == "NONE":
        return None
    where = f"{uri}: line {line}"
    keyformat = raw.get("keyformat")
    if keyformat not in (None, "identity"):  # only when no identity key applies (see _LineStamper)
        raise UnsupportedEncryption(f"{where}: KEYFORMAT={keyformat} is not supported, and no identity key applies")
    if method != "AES-128":
        raise UnsupportedEncryption(f"{where}: METHOD={method or '(missing)'} is not supported (only AES-128 and NONE)")
    key_uri = raw.get("uri")
    if not key_uri:
        raise InputError(f"{where}: METHOD=AES-128 without a URI")
    inline = scheme_of(key_uri) == "data"  # the key itself: nothing to resolve
    return KeyRef(
        uri=key_uri,
        resolved_uri=key_uri if inline else resolve(uri, key_uri, line, carry_query=carry_query),
        key_id=key_id_of(key_uri, key_id_param),
        iv=_parse_iv(raw.get("iv"), where),
        line=line,
    )


def key_id_of(key_uri: str, param: str | None = None) -> str | None:
    """The KeyID carried in a key URI's query (``key_id=``, ``KeyID=``, ``kid=`` or ``param=``)."""
    if scheme_of(key_uri) == "data":  # no query: all of it is the key
        return None
    wanted = (param.lower(),) if param else KEY_ID_PARAMS
    query = key_uri.partition("?")[2].partition("#")[0]
    for name, value in parse_qsl(query, keep_blank_values=False):
        if name.lower() in wanted and value:
            return value
    return None


_IV = re.compile(r"0[xX]([0-9a-fA-F]{1,32})")


def _parse_iv(text: str | None, where: str) -> bytes | None:
    if text is None:
        return None
    match = _IV.fullmatch(text.strip())
    if not match:
        raise InputError(f"{where}: bad IV {text!r} (want 0x and up to 32 hex digits)")
    return int(match.group(1), 16).to_bytes(16, "big")


def _iv_for(key: KeyRef | None, sequence: int) -> bytes | None:
    if key is None:
        return None
    if key.iv is not None:
        return key.iv
    if not 0 <= sequence < 1 << 128:
        raise InputError(f"media sequence {sequence} cannot be an implicit IV")
    return sequence.to_bytes(16, "big")


_BYTERANGE = re.compile(r"(\d{1,15})(?:@(\d{1,15}))?")
#: No HLS part is this large; a byte range claiming more is an error, not an allocation.
MAX_PART = 1 << 31


def _byterange(text: str | None, part_uri: str, ends: dict[str, int], uri: str, line: int) -> ByteRange | None:
    if text is None:
        return None
    match = _BYTERANGE.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise InputError(f"{uri}: line {line}: bad BYTERANGE {text!r}")
    length = int(match.group(1))
    if length > MAX_PART:  # checked here, before anything is allocated for it
        raise InputError(f"{uri}: line {line}: BYTERANGE length {length} is larger than any segment (2 GiB at most)")
    if match.group(2) is not None:
        offset = int(match.group(2))
    elif part_uri in ends:
        offset = ends[part_uri]
    else:
        raise InputError(f"{uri}: line {line}: BYTERANGE {text!r} has no offset and follows no range of {part_uri}")
    ends[part_uri] = offset + length
    return ByteRange(offset, length)


#: A relative or absolute path, perhaps with a query: no scheme, host, fragment, escapes or white space.
_PLAIN_PATH = re.compile(r"(?!//)[^:%#\s\x00-\x1f]+")


def resolve(base: str, ref: str, line: int = 0, *, carry_query: bool = False) -> str:
    """Resolve a playlist reference (from ``line``) against the playlist's own URL or local path.

    A file on disk has no query string, so references from a local playlist lose theirs
    (the live service writes ``seg.ts?app=live&...``). Other schemes (``file:``, ``data:``)
    pass through unchanged, for the fetcher to refuse.

    ``carry_query``: a reference without a query string that resolves to the playlist's own
    scheme, host and port gets the playlist URL's query, which on signed URLs carries the access
    (``?auth_key=…``). Never to another host, nor from https to http: it may be a credential.
    """
    try:
        if "\0" in ref:
            raise ValueError("a NUL byte")
        if _PLAIN_PATH.fullmatch(ref) and not is_url(base):  # most references: quicker than urllib, same result
            path = ref.partition("?")[0]
            if path not in ("", ".", "..") and "/" not in path:  # a file name: beside the playlist
                return _folder_of(base) + path
            return os.path.normpath(os.path.join(os.path.dirname(base), path))
        if is_url(ref) or is_url(base):
            resolved = urljoin(base, ref)
            return _with_query_of(base, resolved) if carry_query and is_url(base) else resolved
        if scheme_of(ref):
            return ref
        path = unquote(urlsplit(ref).path)
        if "\0" in path:  # "%00": no file name holds one
            raise ValueError("a NUL byte, as %00")
        return os.path.normpath(os.path.join(os.path.dirname(base), path))
    except ValueError as exc:  # urllib refuses some malformed URLs, e.g. "http://[x"
        raise InputError(f"{base}: line {line}: bad URI {ref!r} ({exc})") from None


@functools.lru_cache(maxsize=64)
def _folder_of(playlist: str) -> str:
    """The folder of a local playlist, normalised, with the separator to put a file name after."""
    folder = os.path.normpath(os.path.dirname(playlist))
    return "" if folder == os.curdir else as_folder(folder)


def _with_query_of(base: str, resolved: str) -> str:
    """``resolved`` with the query of ``base``, when it has none and lives on the same scheme, host and port."""
    there, here = urlsplit(base), urlsplit(resolved)
    if not there.query or here.query or (here.scheme.lower(), here.netloc.lower()) != (there.scheme.lower(),
                                                                                       there.netloc.lower()):
        return resolved
    return urlunsplit(here._replace(query=there.query))
