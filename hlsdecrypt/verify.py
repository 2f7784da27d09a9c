"""``verify``: evidence, check by check, that a stream is encrypted as it should be.

Every part is fetched once; its ciphertext, its decryption, its key and its IV feed the
checks below, each of which ends pass, fail, warn or skip with a one-line summary and the
evidence (segments and playlist lines) behind it. Failures are kept for what breaks
protection or playback (clear media, broken ciphertext, wrong or missing keys); practices
the live service itself follows, such as one all-zero IV for every segment under a key, are
warnings, and failures only with ``strict``.
"""

from __future__ import annotations

import os.path
import posixpath
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import BinaryIO, Iterable
from urllib.parse import unquote, urlsplit

from .crypto import DataKey, decrypt_cbc
from .errors import DecryptError, KeyUnavailable, UsageError
from .fetch import Buffer, Fetcher
from .keys import KeyChain
from .media import looks_clear, structure_problem
from .pipeline import default_jobs, errors_about, load_media_playlist, ordered_map
from .playlist import KeyRef, MediaPlaylist, Part, is_url

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"
CLEAR, OK, FAILED = "clear", "ok", "failed"  # what became of one part
CHECKS = ("coverage", "ciphertext", "decryption", "key-availability", "key-rotation", "key-reuse", "iv-reuse",
          "key-transport", "reference")
EVIDENCE_LIMIT = 20


@dataclass
class Check:
    name: str
    status: str
    summary: str
    evidence: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PartOutcome:
    """What verify saw of one part, so that a report can draw the stream: names and verdicts, never key values."""

    label: str
    sequence: int | None  # None for an init section
    name: str  # the file name of its URI, without the query (which may carry a signature)
    duration: float
    discontinuity: bool
    key: str | None  # how messages name its key; None for a clear part
    key_index: int | None  # the key's place among the stream's keys, in order of first use
    status: str  # CLEAR, OK or FAILED
    iv_reused: bool  # its IV serves another part under the same key
    problem: str | None = None  # why it failed


@dataclass
class Report:
    source: str
    playlist: str
    variant: str | None
    segments: int
    parts: int
    keys: int
    checks: list[Check]
    timeline: tuple[PartOutcome, ...] = ()  # every part, in playlist order
    expect_rotation: int | None = None

    @property
    def failed(self) -> bool:
        return any(c.status == FAIL for c in self.checks)

    def as_json(self) -> dict:
        """The documented report (schema ``hlsdecrypt.verify/1``, see the README)."""
        return {"schema": "hlsdecrypt.verify/1", "result": FAIL if self.failed else PASS, "source": self.source,
                "playlist": self.playlist, "variant": self.variant, "segments": self.segments,
                "parts": self.parts, "keys": self.keys, "checks": [asdict(c) for c in self.checks],
                "expect_rotation": self.expect_rotation, "timeline": [asdict(p) for p in self.timeline]}


@dataclass
class _Observed:
    """What fetching and decrypting every part showed, for the checks to judge."""

    gaps: list[Part] = field(default_factory=list)  # EXT-X-GAP: not fetched, so nothing to check
    clear: list[Part] = field(default_factory=list)
    none_after_aes: list[Part] = field(default_factory=list)
    broken_ciphertext: list[str] = field(default_factory=list)
    decrypted: int = 0
    decrypt_failures: list[str] = field(default_factory=list)
    containers: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    unavailable: dict[str, str] = field(default_factory=dict)  # key identity -> why
    key_values: dict[DataKey, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))  # -> identity: name
    reference_diff: str | None = None
    reference_done: bool = True
    problems: dict[Part, str] = field(default_factory=dict)  # part -> why it failed, for the timeline

    def fault(self, found: list[str], part: Part, why: str) -> None:
        """Record a failed part both as evidence for its check and against the part itself."""
        found.append(f"{part.label}: {why}")
        self.problems.setdefault(part, why)


def verify(source: str, keys: KeyChain, fetcher: Fetcher, *, variant: str = "best",
           key_id_param: str | None = None, reference: str | None = None, expect_rotation: int | None = None,
           strict: bool = False, jobs: int | None = None) -> Report:
    if expect_rotation is not None and expect_rotation < 1:
        raise UsageError("--expect-rotation must be at least 1")
    playlist, chosen = load_media_playlist(source, fetcher, variant=variant, key_id_param=key_id_param)
    seen = _Observed(gaps=[p for p in playlist.parts if p.gap])
    fetched = [p for p in playlist.parts if not p.gap]
    keys.prefetch(fetched)
    ref_file = _open_reference(reference)
    try:
        def fetch(part: Part) -> Buffer:
            with errors_about(part):
                return fetcher.read(part.uri, part.byterange)

        raw_parts = ordered_map(fetch, fetched, jobs or default_jobs(playlist))
        previous: Part | None = None
        for part, raw in zip(fetched, raw_parts):
            clear = _observe(part, raw, previous, keys, seen)
            _compare(part, clear, ref_file, seen)
            previous = part
        if ref_file and seen.reference_done and seen.reference_diff is None and ref_file.read(1):
            seen.reference_diff = "the reference goes on after the stream ends"
    finally:
        if ref_file:
            ref_file.close()
    checks = [
        _coverage(playlist, seen), _ciphertext(playlist, seen), _decryption(playlist, seen),
        _availability(playlist, seen), _rotation(playlist, expect_rotation), _reuse(playlist, seen),
        _iv_reuse(playlist, strict), _transport(playlist, strict), _reference(reference, seen),
    ]
    return Report(source, playlist.uri, chosen.uri if chosen else None, len(playlist.segments),
                  len(playlist.parts), len(playlist.keys), checks, _timeline(playlist, seen), expect_rotation)


def _timeline(playlist: MediaPlaylist, seen: _Observed) -> tuple[PartOutcome, ...]:
    index = {ref.identity: n for n, ref in enumerate(playlist.keys)}
    reused = {p for parts in _iv_uses(playlist).values() if len(parts) > 1 for p in parts}
    outcomes = []
    for part in playlist.parts:
        problem = seen.problems.get(part)
        status = FAILED if problem else CLEAR if part.cipher is None else OK
        key = part.key if part.cipher else None
        outcomes.append(PartOutcome(part.label, part.sequence, _file_name(part.uri), part.duration, part.discontinuity,
                                    key.name if key else None, index[key.identity] if key else None, status,
                                    part in reused, problem))
    return tuple(outcomes)


def _file_name(uri: str) -> str:
    return posixpath.basename(unquote(urlsplit(uri).path)) if is_url(uri) else os.path.basename(uri)


def _open_reference(path: str | None) -> BinaryIO | None:
    if path is None:
        return None
    try:
        return open(path, "rb")
    except OSError as exc:
        raise UsageError(f"--reference {path}: {exc.strerror}") from None


def _observe(part: Part, raw: Buffer, previous: Part | None, keys: KeyChain, seen: _Observed) -> Buffer | None:
    """Record what one part shows; return its clear bytes, or None when they cannot be had."""
    if part.cipher is None:
        seen.clear.append(part)
        if previous is not None and previous.key is not None:
            seen.none_after_aes.append(part)
        return raw
    ref, iv = part.cipher
    if looks_clear(raw):
        seen.fault(seen.broken_ciphertext, part, "clear media under METHOD=AES-128")
        return None
    if len(raw) % 16:
        seen.fault(seen.broken_ciphertext, part, f"{len(raw)} bytes, not a multiple of 16 (truncated?)")
        return None
    try:
        key = keys.get(ref)
    except KeyUnavailable as exc:
        seen.unavailable.setdefault(ref.identity, str(exc))
        seen.problems.setdefault(part, f"no key: {exc}")
        return None
    # by identity: a data: key is named by its line, and the same one may be written on several
    seen.key_values[key].setdefault(ref.identity, ref.name)
    try:
        clear = decrypt_cbc(raw, key, iv)
    except DecryptError as exc:
        seen.fault(seen.decrypt_failures, part, str(exc))
        return None
    problem = structure_problem(clear)
    if problem:
        seen.fault(seen.decrypt_failures, part, problem)
        return None
    seen.decrypted += 1
    seen.containers["MPEG-TS" if clear[:1] == b"\x47" else "fMP4" if bytes(clear[4:8]).isalpha() else "audio"] += 1
    return clear


def _compare(part: Part, clear: Buffer | None, ref: BinaryIO | None, seen: _Observed) -> None:
    if ref is None or seen.reference_diff is not None or not seen.reference_done:
        return
    if clear is None:
        seen.reference_done = False  # cannot compare past a part we could not decrypt
        return
    expected = ref.read(len(clear))
    if expected != clear:
        at = next((i for i, (a, b) in enumerate(zip(expected, bytes(clear))) if a != b), len(expected))
        seen.reference_diff = f"{part.label} differs from the reference at its byte {at}"
        seen.problems.setdefault(part, f"differs from the reference at its byte {at}")


def _check(name: str, status: str, summary: str, evidence: Iterable[str] = ()) -> Check:
    items = list(evidence)
    if len(items) > EVIDENCE_LIMIT:
        items = items[:EVIDENCE_LIMIT] + [f"… and {len(items) - EVIDENCE_LIMIT} more"]
    return Check(name, status, summary, items)


def _coverage(playlist: MediaPlaylist, seen: _Observed) -> Check:
    total = len(playlist.parts) - len(seen.gaps)
    gaps = f"; {len(seen.gaps)} EXT-X-GAP segments not fetched" if seen.gaps else ""
    noted = [f"{p.label}: EXT-X-GAP, not fetched" for p in seen.gaps]
    if not seen.clear:
        return _check("coverage", PASS, f"all {total} parts are under METHOD=AES-128{gaps}", noted)
    switched = set(map(id, seen.none_after_aes))
    evidence = [f"{p.label}: clear" + (", METHOD=NONE after encrypted parts" if id(p) in switched else "")
                for p in seen.clear]
    return _check("coverage", FAIL, f"{len(seen.clear)} of {total} parts are not encrypted{gaps}", evidence + noted)


def _ciphertext(playlist: MediaPlaylist, seen: _Observed) -> Check:
    encrypted = len(playlist.parts) - len(seen.gaps) - len(seen.clear)
    if not encrypted:
        return _check("ciphertext", SKIP, "no encrypted parts")
    if seen.broken_ciphertext:
        return _check("ciphertext", FAIL, f"{len(seen.broken_ciphertext)} of {encrypted} encrypted parts are "
                                          "not sound ciphertext", seen.broken_ciphertext)
    return _check("ciphertext", PASS, f"{encrypted} encrypted parts: whole AES blocks, no clear TS or fMP4 structure")


def _decryption(playlist: MediaPlaylist, seen: _Observed) -> Check:
    tried = seen.decrypted + len(seen.decrypt_failures)
    if not tried:
        return _check("decryption", SKIP, "no part could be decrypted (no sound ciphertext with a key)")
    if seen.decrypt_failures:
        return _check("decryption", FAIL, f"{len(seen.decrypt_failures)} of {tried} parts do not decrypt to media",
                      seen.decrypt_failures)
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(seen.containers.items()))
    return _check("decryption", PASS, f"{tried} parts decrypt with valid padding to whole media ({kinds})")


def _availability(playlist: MediaPlaylist, seen: _Observed) -> Check:
    if not playlist.keys:
        return _check("key-availability", SKIP, "no keys")
    if seen.unavailable:
        return _check("key-availability", FAIL, f"{len(seen.unavailable)} of {len(playlist.keys)} keys unavailable",
                      seen.unavailable.values())
    return _check("key-availability", PASS, f"all {len(playlist.keys)} keys available")


def _runs(playlist: MediaPlaylist) -> list[tuple[KeyRef, list[int]]]:
    """Runs of consecutive media segments (their sequence numbers) under the same key."""
    runs: list[tuple[KeyRef, list[int]]] = []
    for part in playlist.segments:
        if part.key is None or part.sequence is None:
            continue
        if runs and runs[-1][0].identity == part.key.identity and runs[-1][1][-1] == part.sequence - 1:
            runs[-1][1].append(part.sequence)
        else:
            runs.append((part.key, [part.sequence]))
    return runs


def _rotation(playlist: MediaPlaylist, expect: int | None) -> Check:
    runs = _runs(playlist)
    if not runs:
        return _check("key-rotation", SKIP, "no encrypted segments")
    longest = max(len(r) for _, r in runs)
    summary = f"{len(playlist.keys)} keys; at most {longest} consecutive segments under one key"
    if expect is None:
        return _check("key-rotation", PASS, summary)
    long_runs = [f"{ref.name} (line {ref.line}): segments {r[0]}-{r[-1]}, {len(r)} under one key"
                 for ref, r in runs if len(r) > expect]
    if long_runs:
        return _check("key-rotation", FAIL, f"{summary}; expected a new key every {expect}", long_runs)
    return _check("key-rotation", PASS, f"{summary}; a new key at least every {expect}")


def _reuse(playlist: MediaPlaylist, seen: _Observed) -> Check:
    if not seen.key_values:
        return _check("key-reuse", SKIP, "no keys to compare")
    shared = [f"one key under {len(names)} names: {', '.join(names.values())}" for names in seen.key_values.values()
              if len(names) > 1]
    if shared:
        return _check("key-reuse", FAIL, f"{len(shared)} keys appear under more than one KeyID or URI", shared)
    return _check("key-reuse", PASS, f"{len(seen.key_values)} keys, all different")


def _iv_uses(playlist: MediaPlaylist) -> dict[tuple[str, bytes], list[Part]]:
    """The encrypted parts under each (key identity, IV) pair."""
    uses: dict[tuple[str, bytes], list[Part]] = defaultdict(list)
    for part in playlist.parts:
        if part.cipher and not part.gap:
            ref, iv = part.cipher
            uses[(ref.identity, iv)].append(part)
    return uses


def _iv_reuse(playlist: MediaPlaylist, strict: bool) -> Check:
    uses = _iv_uses(playlist)
    names = {p.key.identity: p.key.name for p in playlist.parts if p.cipher}
    reused = [f"IV 0x{iv.hex()} under {names[identity]}: {len(parts)} parts, first {parts[0].label}"
              for (identity, iv), parts in uses.items() if len(parts) > 1]
    if not uses:
        return _check("iv-reuse", SKIP, "no encrypted parts")
    if reused:
        return _check("iv-reuse", FAIL if strict else WARN,
                      f"{len(reused)} IVs used for more than one part under the same key", reused)
    return _check("iv-reuse", PASS, f"{len(uses)} IVs, none used twice under one key")


def _transport(playlist: MediaPlaylist, strict: bool) -> Check:
    if not playlist.keys:
        return _check("key-transport", SKIP, "no keys")
    plain = [f"line {k.line}: {k.uri.split('?')[0]}" for k in playlist.keys if k.resolved_uri.startswith("http://")]
    if plain:
        return _check("key-transport", FAIL if strict else WARN, f"{len(plain)} key URIs use plain http", plain)
    return _check("key-transport", PASS, "no key URI uses plain http")


def _reference(reference: str | None, seen: _Observed) -> Check:
    if reference is None:
        return _check("reference", SKIP, "no --reference given")
    if seen.reference_diff:
        return _check("reference", FAIL, "the decrypted stream differs from the reference", [seen.reference_diff])
    if not seen.reference_done:
        return _check("reference", SKIP, "some parts could not be decrypted, so the stream cannot be compared")
    return _check("reference", PASS, f"byte-identical to {reference}")
