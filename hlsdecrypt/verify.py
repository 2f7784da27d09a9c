"""``verify``: evidence, check by check, that a stream is encrypted as it should be.

Every part is fetched once; its ciphertext, its decryption, its key and its IV feed the
checks below, each of which ends pass, fail, warn or skip with a one-line summary and the
evidence (segments and playlist lines) behind it. Failures are kept for what breaks
protection or playback (clear media, broken ciphertext, wrong or missing keys); practices
the live service itself follows, such as one all-zero IV for every segment under a key, are
warnings, and failures only with ``strict``.
"""

from __future__ import annotations

import io
import os.path
import posixpath
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import BinaryIO, Callable, Iterable
from urllib.parse import unquote, urlsplit

from .crypto import DataKey, decrypt_cbc
from .errors import DecryptError, FetchError, KeyUnavailable, UsageError, plural
from .fetch import Buffer, Fetcher
from .keys import KeyChain, key_chain
from .media import looks_clear, structure_problem
from .pipeline import default_jobs, load_media_playlist, ordered_map
from .playlist import KeyRef, MediaPlaylist, Part
from .uris import is_url

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"
CLEAR, OK, FAILED = "clear", "ok", "failed"  # what became of one part
EVIDENCE_LIMIT = 20


@dataclass
class Check:
    name: str
    status: str
    summary: str
    evidence: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)  # slots: one per part, and a long recording has 100,000
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

    @property
    def passed(self) -> bool:
        """No check failed (warnings and skips allowed): ``assert report.passed, report.table()``."""
        return not self.failed

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def table(self) -> str:
        """The report as the command line prints it: a line per check, evidence under failures and warnings."""
        from .report import write_table  # the presentation lives there; it imports this module

        out = io.StringIO()
        write_table(self, out)
        return out.getvalue()

    def as_json(self) -> dict:
        """The documented report (schema ``hlsdecrypt.verify/1``, see the README)."""
        return {"schema": "hlsdecrypt.verify/1", "result": FAIL if self.failed else PASS, "source": self.source,
                "playlist": self.playlist, "variant": self.variant, "segments": self.segments,
                "parts": self.parts, "keys": self.keys, "checks": [asdict(c) for c in self.checks],
                "expect_rotation": self.expect_rotation, "timeline": [_flat(p) for p in self.timeline]}


_OUTCOME_FIELDS = tuple(f.name for f in fields(PartOutcome))


def _flat(outcome: PartOutcome) -> dict:
    """``asdict`` for a PartOutcome, whose fields are all plain values: ``asdict`` copies each deeply,
    which costs seconds for a long recording's timeline."""
    return {name: getattr(outcome, name) for name in _OUTCOME_FIELDS}


@dataclass
class _Observed:
    """What fetching and decrypting every part showed, for the checks to judge."""

    gaps: list[Part] = field(default_factory=list)  # EXT-X-GAP: not fetched, so nothing to check
    unfetched: list[str] = field(default_factory=list)  # parts the server would not give
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
    # id(part) -> why it failed, for the timeline (by id: hashing a part hashes all its fields)
    problems: dict[int, str] = field(default_factory=dict)

    def fault(self, found: list[str], part: Part, why: str) -> None:
        """Record a failed part both as evidence for its check and against the part itself."""
        found.append(f"{part.label}: {why}")
        self.problems.setdefault(id(part), why)


def verify(source: str, *, keys: KeyChain | None = None, fetcher: Fetcher | None = None, variant: str = "best",
           key_id_param: str | None = None, reference: str | None = None, expect_rotation: int | None = None,
           strict: bool = False, jobs: int | None = None) -> Report:
    """Check the encryption of the stream at ``source``; the Report says what passed, with evidence.

    ``keys`` and ``fetcher`` as for ``decrypt``; ``reference`` is a clear recording the decrypted
    stream must equal byte for byte; ``expect_rotation`` the most segments one key may cover;
    ``strict`` turns warnings (reused IVs, keys over plain http, a clear init section) into failures.
    """
    if expect_rotation is not None and expect_rotation < 1:
        raise UsageError("expect_rotation must be at least 1", option="expect_rotation")
    fetcher = fetcher or Fetcher()
    ref_file = _open_reference(reference)
    try:
        with nullcontext(keys) if keys is not None else key_chain(fetcher=fetcher, stop_after_failure=False) as chain:
            playlist, chosen = load_media_playlist(source, fetcher, variant=variant, key_id_param=key_id_param)
            seen = _observe_all(playlist, chain, fetcher, ref_file, jobs)
    finally:
        if ref_file:
            ref_file.close()
    case = _Case(playlist, seen, strict, expect_rotation, reference)
    checks = [_check(name, *judge(case)) for name, judge in CHECKS]
    return Report(source, playlist.uri, chosen.uri if chosen else None, len(playlist.segments),
                  len(playlist.parts), len(playlist.keys), checks, _timeline(playlist, seen), expect_rotation)


def _observe_all(playlist: MediaPlaylist, keys: KeyChain, fetcher: Fetcher, ref_file: BinaryIO | None,
                 jobs: int | None) -> _Observed:
    """Fetch every part once, in parallel, and record what each shows."""
    seen = _Observed(gaps=[p for p in playlist.parts if p.gap])
    fetched = [p for p in playlist.parts if not p.gap]
    keys.prefetch(fetched)

    def fetch(part: Part) -> Buffer | FetchError:
        try:
            return fetcher.read(part.uri, part.byterange)
        except FetchError as exc:  # a finding about the stream, not the end of the check
            return exc

    previous: Part | None = None
    for part, raw in zip(fetched, ordered_map(fetch, fetched, jobs or default_jobs(playlist))):
        if isinstance(raw, FetchError):
            seen.fault(seen.unfetched, part, raw.message)
            _compare(part, None, ref_file, seen)
        else:
            _compare(part, _observe(part, raw, previous, keys, seen), ref_file, seen)
        previous = part
    if ref_file and seen.reference_done and seen.reference_diff is None and ref_file.read(1):
        seen.reference_diff = "the reference goes on after the stream ends"
    return seen


def _timeline(playlist: MediaPlaylist, seen: _Observed) -> tuple[PartOutcome, ...]:
    index = {ref.identity: n for n, ref in enumerate(playlist.keys)}
    reused = {id(p) for parts in _iv_uses(playlist).values() if len(parts) > 1 for p in parts}
    outcomes = []
    for part in playlist.parts:
        problem = seen.problems.get(id(part))
        encrypted = part.cipher is not None
        status = FAILED if problem else OK if encrypted else CLEAR
        key = part.key if encrypted else None
        outcomes.append(PartOutcome(part.label, part.sequence, _file_name(part.uri), part.duration, part.discontinuity,
                                    key.name if key else None, index[key.identity] if key else None, status,
                                    id(part) in reused, problem))
    return tuple(outcomes)


def _file_name(uri: str) -> str:
    return posixpath.basename(unquote(urlsplit(uri).path)) if is_url(uri) else os.path.basename(uri)


def _open_reference(path: str | None) -> BinaryIO | None:
    if path is None:
        return None
    try:
        return open(path, "rb")
    except OSError as exc:
        raise UsageError(f"reference {path}: {exc.strerror}", option="reference") from None


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
        seen.problems.setdefault(id(part), f"no key: {exc}")
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
        seen.problems.setdefault(id(part), f"differs from the reference at its byte {at}")


@dataclass(frozen=True)
class _Case:
    """Everything a check judges: the plan, what was observed, and what was asked for."""

    playlist: MediaPlaylist
    seen: _Observed
    strict: bool
    expect_rotation: int | None
    reference: str | None


Verdict = tuple  # (status, summary, evidence)


def _check(name: str, status: str, summary: str, evidence: Iterable[str] = ()) -> Check:
    items = list(evidence)
    if len(items) > EVIDENCE_LIMIT:
        items = items[:EVIDENCE_LIMIT] + [f"… and {len(items) - EVIDENCE_LIMIT} more"]
    return Check(name, status, summary, items)


def _coverage(c: _Case) -> Verdict:
    seen = c.seen
    total = len(c.playlist.parts) - len(seen.gaps)
    gaps = f"; {plural(len(seen.gaps), 'EXT-X-GAP segment')} not fetched" if seen.gaps else ""
    noted = [f"{p.label}: EXT-X-GAP, not fetched" for p in seen.gaps]
    if not seen.clear:
        return PASS, f"all {total} parts are under METHOD=AES-128{gaps}", noted
    switched = set(map(id, seen.none_after_aes))
    evidence = [f"{p.label}: clear" + (", METHOD=NONE after encrypted parts" if id(p) in switched else "")
                for p in seen.clear]
    if all(p.is_init for p in seen.clear):
        # fMP4 with a clear init section is the usual layout: it holds no media, only its description
        return (FAIL if c.strict else WARN), f"the init section is clear; all media segments are encrypted{gaps}", \
            [f"{p.label}: clear init section (EXT-X-MAP before EXT-X-KEY)" for p in seen.clear] + noted
    return FAIL, f"{len(seen.clear)} of {total} parts are not encrypted{gaps}", evidence + noted


def _segment_availability(c: _Case) -> Verdict:
    fetched = len(c.playlist.parts) - len(c.seen.gaps)
    if c.seen.unfetched:
        return FAIL, f"{len(c.seen.unfetched)} of {fetched} parts could not be fetched", c.seen.unfetched
    return PASS, f"all {fetched} parts fetched"


def _ciphertext(c: _Case) -> Verdict:
    seen = c.seen
    encrypted = len(c.playlist.parts) - len(seen.gaps) - len(seen.clear) - len(seen.unfetched)
    if not encrypted:
        return SKIP, "no encrypted parts"
    if seen.broken_ciphertext:
        return FAIL, f"{len(seen.broken_ciphertext)} of {encrypted} encrypted parts are not sound ciphertext", \
            seen.broken_ciphertext
    return PASS, f"{encrypted} encrypted parts: whole AES blocks, no clear TS or fMP4 structure"


def _decryption(c: _Case) -> Verdict:
    seen = c.seen
    tried = seen.decrypted + len(seen.decrypt_failures)
    if not tried:
        return SKIP, "no part could be decrypted (no sound ciphertext with a key)"
    if seen.decrypt_failures:
        return FAIL, f"{len(seen.decrypt_failures)} of {tried} parts do not decrypt to media", seen.decrypt_failures
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(seen.containers.items()))
    return PASS, f"{tried} parts decrypt with valid padding to whole media ({kinds})"


def _key_availability(c: _Case) -> Verdict:
    keys = c.playlist.keys
    if not keys:
        return SKIP, "no keys"
    if c.seen.unavailable:
        return FAIL, f"{len(c.seen.unavailable)} of {plural(len(keys), 'key')} unavailable", c.seen.unavailable.values()
    return PASS, f"{'the key is' if len(keys) == 1 else f'all {len(keys)} keys are'} available"


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


def _rotation(c: _Case) -> Verdict:
    runs = _runs(c.playlist)
    if not runs:
        return SKIP, "no encrypted segments"
    longest = max(len(r) for _, r in runs)
    summary = (f"{plural(len(c.playlist.keys), 'key')}; at most {plural(longest, 'consecutive segment')} "
               "under one key")
    expect = c.expect_rotation
    if expect is None:
        return PASS, summary
    long_runs = [f"{ref.name} (line {ref.line}): segments {r[0]}-{r[-1]}, {len(r)} under one key"
                 for ref, r in runs if len(r) > expect]
    if long_runs:
        return FAIL, f"{summary}; expected a new key every {plural(expect, 'segment')}", long_runs
    return PASS, f"{summary}; a new key at least every {plural(expect, 'segment')}"


def _key_reuse(c: _Case) -> Verdict:
    values = c.seen.key_values
    if not values:
        return SKIP, "no keys to compare"
    shared = [f"one key under {len(names)} names: {', '.join(names.values())}" for names in values.values()
              if len(names) > 1]
    if shared:
        return FAIL, f"{len(shared)} keys appear under more than one KeyID or URI", shared
    return PASS, "one key" if len(values) == 1 else f"{len(values)} keys, all different"


def _iv_uses(playlist: MediaPlaylist) -> dict[tuple[str, bytes], list[Part]]:
    """The encrypted parts under each (key identity, IV) pair."""
    uses: dict[tuple[str, bytes], list[Part]] = defaultdict(list)
    for part in playlist.parts:
        if part.cipher and not part.gap:
            ref, iv = part.cipher
            uses[(ref.identity, iv)].append(part)
    return uses


def _iv_reuse(c: _Case) -> Verdict:
    uses = _iv_uses(c.playlist)
    names = {p.key.identity: p.key.name for p in c.playlist.parts if p.key and p.cipher}
    reused = [f"IV 0x{iv.hex()} under {names[identity]}: {len(parts)} parts, first {parts[0].label}"
              for (identity, iv), parts in uses.items() if len(parts) > 1]
    if not uses:
        return SKIP, "no encrypted parts"
    if reused:
        return (FAIL if c.strict else WARN), f"{len(reused)} IVs used for more than one part under the same key", \
            reused
    return PASS, f"{plural(len(uses), 'IV')}, none used twice under one key"


def _transport(c: _Case) -> Verdict:
    keys = c.playlist.keys
    if not keys:
        return SKIP, "no keys"
    plain = [f"line {k.line}: {k.uri.split('?')[0]}" for k in keys if k.resolved_uri.startswith("http://")]
    if plain:
        return (FAIL if c.strict else WARN), f"{plural(len(plain), 'key URI')} use plain http", plain
    return PASS, "no key URI uses plain http"


def _reference(c: _Case) -> Verdict:
    seen = c.seen
    if c.reference is None:
        return SKIP, "no reference given"
    if seen.reference_diff:
        return FAIL, "the decrypted stream differs from the reference", [seen.reference_diff]
    if not seen.reference_done:
        return SKIP, "some parts could not be decrypted, so the stream cannot be compared"
    return PASS, f"byte-identical to {c.reference}"


#: The checks, in the order reports list them (and the README documents).
CHECKS: tuple[tuple[str, Callable[[_Case], Verdict]], ...] = (
    ("coverage", _coverage),
    ("segment-availability", _segment_availability),
    ("ciphertext", _ciphertext),
    ("decryption", _decryption),
    ("key-availability", _key_availability),
    ("key-rotation", _rotation),
    ("key-reuse", _key_reuse),
    ("iv-reuse", _iv_reuse),
    ("key-transport", _transport),
    ("reference", _reference),
)
