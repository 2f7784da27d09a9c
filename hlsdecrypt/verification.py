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
import time
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property, partial
from typing import BinaryIO, Callable, ContextManager, Iterable, Iterator
from urllib.parse import unquote, urlsplit

from .crypto import SMALL, DataKey, decrypt_cbc, decrypt_short
from .errors import DecryptError, FetchError, HlsDecryptError, KeyUnavailable, UsageError, plural
from .fetch import Buffer, Fetcher
from .live import (DISCONTINUITY, INTERRUPTED, KEY_PATIENCE, STALL_TARGETS, FollowLoop, Reload, Runner, Sequencer,
                     live_jobs, open_live, patient_keys, program_dates, segments_named, watched_for)
from .keys import KeyChain, key_chain
from .media import looks_clear, structure_problem
from .pipeline import RUN, default_jobs, load_media_playlist, load_rendition, load_stream, ordered_map
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
    expect_rotation_seconds: float | None = None
    follow: dict | None = None  # verify_live: what was watched, for how long, and why it stopped
    label: str = ""  # of a master's media playlists, which: "variant 0 (BANDWIDTH=…)", "audio English"

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

    def as_json(self, *, timeline: object = None) -> dict:
        """The documented report (schema ``hlsdecrypt.verify/1``, see the README). ``timeline``, when
        given, stands where the parts would be (a writer's slot for them)."""
        return {"schema": "hlsdecrypt.verify/1", "result": FAIL if self.failed else PASS, "source": self.source,
                "playlist": self.playlist, "variant": self.variant, "segments": self.segments,
                "parts": self.parts, "keys": self.keys, "checks": [asdict(c) for c in self.checks],
                "expect_rotation": self.expect_rotation,
                "timeline": [_flat(p) for p in self.timeline] if timeline is None else timeline,
                **({"expect_rotation_seconds": self.expect_rotation_seconds}
                   if self.expect_rotation_seconds is not None else {}),
                **({"follow": self.follow} if self.follow is not None else {})}


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


@dataclass
class LiveWatch:
    """What watching a live channel showed besides its parts, for the live checks (``verify_live``)."""

    duration: float  # seconds asked for
    key_within: float | None  # seconds a new key may take to fetch; None: STALL_TARGETS target durations
    target: float = 0.0  # EXT-X-TARGETDURATION, as last seen
    watched: float = 0.0
    stopped: str = ""
    reloads: int = 0
    lost: list[str] = field(default_factory=list)  # segments that left the window unseen
    lost_segments: int = 0
    went_back: list[str] = field(default_factory=list)
    discontinuities: list[str] = field(default_factory=list)
    stalls: list[str] = field(default_factory=list)
    longest_wait: float = 0.0  # between reloads that brought news
    reload_failures: list[str] = field(default_factory=list)
    appeared: dict[str, float] = field(default_factory=dict)  # key identity -> when a reload first listed it
    key_times: dict[str, float | None] = field(default_factory=dict)  # -> seconds until fetched, None: never
    dates: dict[int, float] = field(default_factory=dict)  # media sequence -> EXT-X-PROGRAM-DATE-TIME

    @property
    def key_deadline(self) -> float:
        return self.key_within if self.key_within is not None else STALL_TARGETS * self.target

    def as_json(self) -> dict:
        return {"duration": self.duration, "watched": round(self.watched, 3), "stopped": self.stopped,
                "reloads": self.reloads, "target_duration": self.target, "key_within": self.key_deadline}


def verify(source: str, *, keys: KeyChain | None = None, fetcher: Fetcher | None = None, variant: str = "best",
           key_id_param: str | None = None, reference: str | None = None, expect_rotation: int | None = None,
           strict: bool = False, jobs: int | None = None, expect_rotation_seconds: float | None = None) -> Report:
    """Check the encryption of the stream at ``source``; the Report says what passed, with evidence.

    ``keys`` and ``fetcher`` as for ``decrypt``; ``reference`` is a clear recording the decrypted
    stream must equal byte for byte; ``expect_rotation`` the most segments one key may cover, or
    ``expect_rotation_seconds`` the key period (the channel's CycleTime), judged from the segments'
    durations; ``strict`` turns warnings (reused IVs, keys over plain http, a clear init section)
    into failures.
    """
    fetcher = fetcher or Fetcher()
    with _chain(keys, fetcher) as chain:
        playlist, chosen = load_media_playlist(source, fetcher, variant=variant, key_id_param=key_id_param)
        return _verify_playlist(source, playlist, chosen.uri if chosen else None, "", chain, fetcher,
                                reference=reference, expect_rotation=expect_rotation, strict=strict, jobs=jobs,
                                expect_rotation_seconds=expect_rotation_seconds)


def verify_all(source: str, *, keys: KeyChain | None = None, fetcher: Fetcher | None = None,
               key_id_param: str | None = None, expect_rotation: int | None = None, strict: bool = False,
               jobs: int | None = None, expect_rotation_seconds: float | None = None) -> list[Report]:
    """``verify`` every media playlist of the stream: of a master, each variant and each rendition
    (an audio track left in the clear is a hole in the protection too); of a media playlist, itself.
    Each Report's ``label`` says which it is."""
    fetcher = fetcher or Fetcher()
    with _chain(keys, fetcher) as chain:
        stream = load_stream(source, fetcher, variant="0", key_id_param=key_id_param)
        if stream.master is None:
            return [_verify_playlist(source, stream.playlist, None, "", chain, fetcher,
                                     expect_rotation=expect_rotation, strict=strict, jobs=jobs,
                                            expect_rotation_seconds=expect_rotation_seconds)]
        master = stream.master
        reports = []
        for n, variant in enumerate(master.variants):
            chain.next_stream()
            playlist = stream.playlist if n == 0 else load_rendition(variant, fetcher, key_id_param=key_id_param)
            label = f"variant {n} (BANDWIDTH={variant.bandwidth})"
            reports.append(_verify_playlist(source, playlist, variant.uri, label, chain, fetcher,
                                            expect_rotation=expect_rotation, strict=strict, jobs=jobs,
                                            expect_rotation_seconds=expect_rotation_seconds))
        for rendition in master.renditions:
            chain.next_stream()
            playlist = load_rendition(rendition, fetcher, key_id_param=key_id_param)
            reports.append(_verify_playlist(source, playlist, rendition.uri, rendition.label, chain, fetcher,
                                            expect_rotation=expect_rotation, strict=strict, jobs=jobs,
                                            expect_rotation_seconds=expect_rotation_seconds))
        return reports


def _chain(keys: KeyChain | None, fetcher: Fetcher) -> ContextManager[KeyChain]:
    return nullcontext(keys) if keys is not None else key_chain(fetcher=fetcher, stop_after_failure=False)


def _verify_playlist(source: str, playlist: MediaPlaylist, variant: str | None, label: str, keys: KeyChain,
                     fetcher: Fetcher, *, reference: str | None = None, expect_rotation: int | None = None,
                     strict: bool = False, jobs: int | None = None,
                     expect_rotation_seconds: float | None = None) -> Report:
    _check_expectations(expect_rotation, expect_rotation_seconds)
    ref_file = _open_reference(reference)
    try:
        seen = _observe_all(playlist, keys, fetcher, ref_file, jobs)
    finally:
        if ref_file:
            ref_file.close()
    case = _Case(playlist, seen, strict, expect_rotation, reference, expect_rotation_seconds)
    checks = [_check(name, *judge(case)) for name, judge in CHECKS]
    return Report(source, playlist.uri, variant, len(playlist.segments), len(playlist.parts), len(playlist.keys),
                  checks, _timeline(playlist, seen, case.iv_uses), expect_rotation,
                  expect_rotation_seconds=expect_rotation_seconds, label=label)


def _check_expectations(segments: int | None, seconds: float | None) -> None:
    if segments is not None and seconds is not None:
        raise UsageError("give expect_rotation (segments) or expect_rotation_seconds, not both",
                         option="expect_rotation")
    if segments is not None and segments < 1:
        raise UsageError("expect_rotation must be at least 1", option="expect_rotation")
    if seconds is not None and not seconds > 0:
        raise UsageError("expect_rotation_seconds must be more than 0", option="expect_rotation_seconds")


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
    bodies = zip(fetched, ordered_map(fetch, fetched, jobs or default_jobs(playlist)))
    for part, raw, clear in _short_ones_decrypted(bodies, keys):
        if isinstance(raw, FetchError):
            seen.fault(seen.unfetched, part, raw.message)
            _compare(part, None, ref_file, seen)
        else:
            _compare(part, _observe(part, raw, previous, keys, seen, clear), ref_file, seen)
        previous = part
    if ref_file and seen.reference_done and seen.reference_diff is None and ref_file.read(1):
        seen.reference_diff = "the reference goes on after the stream ends"
    return seen


def _short_ones_decrypted(bodies: Iterable[tuple[Part, Buffer | FetchError]], keys: KeyChain,
                          ) -> Iterator[tuple[Part, Buffer | FetchError, bytes | DecryptError | None]]:
    """Each part with its body and, for a short one, its clear bytes: decrypted with the short parts
    beside it under the same key, ``RUN`` at most, in one call into the cipher (``decrypt_short``).
    None for the others, and where the key is missing: ``_observe`` then sees to them alone."""
    run: list[tuple[Part, Buffer]] = []
    for part, raw in bodies:
        short = part.key is not None and not isinstance(raw, FetchError) and 0 < len(raw) <= SMALL and not len(raw) % 16
        if run and (not short or part.key is not run[0][0].key or len(run) == RUN):
            yield from _decrypted_run(run, keys)
            run = []
        if short:
            run.append((part, raw))  # type: ignore[arg-type]  # short: not a FetchError
        else:
            yield part, raw, None
    if run:
        yield from _decrypted_run(run, keys)


def _decrypted_run(run: list[tuple[Part, Buffer]], keys: KeyChain,
                   ) -> Iterator[tuple[Part, Buffer, bytes | DecryptError | None]]:
    ref = run[0][0].key
    assert ref is not None
    try:
        key = keys.get(ref)
    except KeyUnavailable:
        clears: list[bytes | DecryptError | None] = [None] * len(run)
    else:
        clears = list(decrypt_short(key, [(raw, part.iv) for part, raw in run]))  # type: ignore[misc]  # keyed: an IV
    for (part, raw), clear in zip(run, clears):
        yield part, raw, clear


def _timeline(playlist: MediaPlaylist, seen: _Observed,
              iv_uses: dict[tuple[str, bytes], list[Part]]) -> tuple[PartOutcome, ...]:
    # each key's name and place once, not per part: a long recording has 100,000 parts and 3,000 keys
    keys = {ref.identity: (ref.name, n) for n, ref in enumerate(playlist.keys)}
    reused = {id(p) for parts in iv_uses.values() if len(parts) > 1 for p in parts}
    outcomes = []
    for part in playlist.parts:
        problem = seen.problems.get(id(part))
        key = part.key if part.iv is not None else None  # part.cipher's, without making its tuple
        name, index = keys[key.identity] if key is not None else (None, None)
        outcomes.append(PartOutcome(part.label, part.sequence, _file_name(part.uri), part.duration, part.discontinuity,
                                    name, index, FAILED if problem else OK if key is not None else CLEAR,
                                    id(part) in reused, problem))
    return tuple(outcomes)


def _file_name(uri: str) -> str:
    return posixpath.basename(unquote(urlsplit(uri).path)) if is_url(uri) else uri[uri.rfind(os.sep) + 1:]


def _open_reference(path: str | None) -> BinaryIO | None:
    if path is None:
        return None
    try:
        return open(path, "rb")
    except OSError as exc:
        raise UsageError(f"reference {path}: {exc.strerror}", option="reference") from None


def _observe(part: Part, raw: Buffer, previous: Part | None, keys: KeyChain, seen: _Observed,
             clear_ahead: bytes | DecryptError | None = None) -> Buffer | None:
    """Record what one part shows; return its clear bytes, or None when they cannot be had.
    ``clear_ahead``: what decrypting it gave already (``_short_ones_decrypted``)."""
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
    clear: Buffer | DecryptError | None = clear_ahead
    if clear is None:
        try:
            clear = decrypt_cbc(raw, key, iv)
        except DecryptError as exc:
            clear = exc
    if isinstance(clear, DecryptError):
        seen.fault(seen.decrypt_failures, part, str(clear))
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
    expect_rotation_seconds: float | None = None
    live: LiveWatch | None = None  # verify_live: what watching the channel showed

    @cached_property
    def iv_uses(self) -> dict[tuple[str, bytes], list[Part]]:
        """The encrypted parts under each (key identity, IV) pair: a check and the timeline both ask."""
        return _iv_uses(self.playlist)


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
    if c.expect_rotation_seconds is not None:
        return _rotation_period(c, runs, c.expect_rotation_seconds)
    expect = c.expect_rotation
    if expect is None:
        if c.live is not None:  # a channel watched: say what period it showed
            complete = [p.seconds for p in _periods(c, runs) if p.complete]
            if complete:
                summary += f"; {plural(len(complete), 'complete key period')} of {_span(complete)}"
        return PASS, summary
    long_runs = [f"{ref.name} (line {ref.line}): segments {r[0]}-{r[-1]}, {len(r)} under one key"
                 for ref, r in runs if len(r) > expect]
    if long_runs:
        return FAIL, f"{summary}; expected a new key every {plural(expect, 'segment')}", long_runs
    return PASS, f"{summary}; a new key at least every {plural(expect, 'segment')}"


@dataclass(frozen=True)
class _Period:
    """One run of segments under one key, timed."""

    ref: KeyRef
    sequences: list[int]
    seconds: float
    complete: bool  # a key change right before and right after it: the whole period was seen


def _periods(c: _Case, runs: list[tuple[KeyRef, list[int]]]) -> list[_Period]:
    """Each run's length in seconds: from EXT-X-PROGRAM-DATE-TIME to the next run's where both
    are known (a channel's clock), else the sum of its segments' durations."""
    durations = {p.sequence: p.duration for p in c.playlist.segments}
    dates = c.live.dates if c.live else {}
    periods = []
    for n, (ref, seqs) in enumerate(runs):
        before = n > 0 and runs[n - 1][1][-1] == seqs[0] - 1
        after = n + 1 < len(runs) and runs[n + 1][1][0] == seqs[-1] + 1
        start, end = dates.get(seqs[0]), dates.get(seqs[-1] + 1) if after else None
        seconds = end - start if start is not None and end is not None and end > start else \
            sum(durations.get(q, 0.0) for q in seqs)
        periods.append(_Period(ref, seqs, seconds, before and after))
    return periods


def _span(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.1f} s" if round(low, 1) == round(high, 1) else f"{low:.1f}-{high:.1f} s"


def _rotation_period(c: _Case, runs: list[tuple[KeyRef, list[int]]], expect: float) -> Verdict:
    """The key period against the channel's CycleTime, give or take one segment duration.

    Only a period seen whole (a key change before and after it) can be too short; the first and
    the last run may have begun before the stream or the watch did, so they fail only by being
    too long already.
    """
    tolerance = c.live.target if c.live else max((p.duration for p in c.playlist.segments), default=0.0)
    periods = _periods(c, runs)
    complete = [p.seconds for p in periods if p.complete]
    wrong = [f"{p.ref.name} (line {p.ref.line}): segments {p.sequences[0]}-{p.sequences[-1]}, {p.seconds:.1f} s"
             + ("" if p.complete else " and not over yet") for p in periods
             if (abs(p.seconds - expect) > tolerance if p.complete else p.seconds > expect + tolerance)]
    wanted = f"expected {expect:g} s ± {tolerance:g} s (one segment)"
    seen = f"{plural(len(complete), 'complete key period')} of {_span(complete)}" if complete else \
        f"no complete key period (the longest run: {max(p.seconds for p in periods):.1f} s)"
    if wrong:
        return FAIL, f"{seen}; {wanted}", wrong
    if not complete:
        return SKIP, f"{seen}; {wanted}: watch for longer than two key periods"
    return PASS, f"{seen}; {wanted}"


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
        if part.key is not None and part.iv is not None and not part.gap:  # part.cipher, without its tuple
            uses[(part.key.identity, part.iv)].append(part)
    return uses


def _iv_reuse(c: _Case) -> Verdict:
    uses = c.iv_uses
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


# -- a live channel, watched ---------------------------------------------------------------

def _segments_lost(c: _Case) -> Verdict:
    live = c.live
    assert live is not None
    if live.lost:
        return FAIL, f"{plural(live.lost_segments, 'segment')} left the window before they could be fetched", \
            live.lost + live.went_back
    if live.went_back:
        return (FAIL if c.strict else WARN), \
            f"the playlist went back {plural(len(live.went_back), 'time')}; nothing was taken twice", live.went_back
    breaks = f"; {plural(len(live.discontinuities), 'discontinuity', 'discontinuities')}" \
        if live.discontinuities else ""
    return PASS, f"no segment left the window unseen{breaks}", live.discontinuities


def _stalls(c: _Case) -> Verdict:
    live = c.live
    assert live is not None
    limit = f"{STALL_TARGETS * live.target:g} s ({STALL_TARGETS} target durations)"
    if live.stalls:
        return FAIL, f"{plural(len(live.stalls), 'stall')}: no new segment for more than {limit}", \
            live.stalls + live.reload_failures
    longest = f"the longest wait for a new segment was {live.longest_wait:.1f} s; a stall is more than {limit}"
    if live.reload_failures:
        return WARN, f"{plural(len(live.reload_failures), 'reload')} failed; {longest}", live.reload_failures
    return PASS, longest


def _key_fetch_time(c: _Case) -> Verdict:
    live = c.live
    assert live is not None
    keys = c.playlist.keys
    if not keys:
        return SKIP, "no keys"
    within = f"{live.key_deadline:g} s" + (f" ({STALL_TARGETS} target durations)" if live.key_within is None else "")
    took = {ref.identity: live.key_times.get(ref.identity) for ref in keys}
    never = [f"{ref.name} (line {ref.line}): not fetched ({c.seen.unavailable.get(ref.identity, 'not by the end')})"
             for ref in keys if took[ref.identity] is None]
    late = [f"{ref.name} (line {ref.line}): fetched {took[ref.identity]:.1f} s after it appeared" for ref in keys
            if (took[ref.identity] or 0.0) > live.key_deadline]
    if never or late:
        return FAIL, f"{len(never) + len(late)} of {plural(len(keys), 'key')} not fetched within {within} of " \
                     "appearing in the playlist", never + late
    slowest = max(t for t in took.values() if t is not None)
    return PASS, f"{'the key was' if len(keys) == 1 else f'all {len(keys)} keys were'} fetched within {within} " \
                 f"of appearing in the playlist (the slowest in {slowest:.1f} s)"


#: The checks only a watched channel has, listed after CHECKS.
LIVE_CHECKS: tuple[tuple[str, Callable[[_Case], Verdict]], ...] = (
    ("segments-lost", _segments_lost),
    ("stalls", _stalls),
    ("key-fetch-time", _key_fetch_time),
)


def verify_live(source: str, duration: float, *, keys: KeyChain | None = None, fetcher: Fetcher | None = None,
                variant: str = "best", key_id_param: str | None = None, expect_rotation_seconds: float | None = None,
                key_within: float | None = None, strict: bool = False, jobs: int | None = None,
                key_patience: float = KEY_PATIENCE, clock: Callable[[], float] = time.monotonic) -> Report:
    """Watch the live channel at ``source`` for ``duration`` seconds (wall time) and report on its encryption.

    Every segment published meanwhile is fetched once and judged by the checks of ``verify``,
    and the channel as a whole by these: ``key-rotation`` against ``expect_rotation_seconds``
    (the channel's CycleTime; periods measured by EXT-X-PROGRAM-DATE-TIME where present, else
    by segment durations; give or take one target duration), ``segments-lost`` (segments that
    left the window unseen; a playlist that went back), ``stalls`` (no new segment for more
    than three target durations) and ``key-fetch-time`` (each key fetched within ``key_within``
    seconds of the reload that first listed it; by default three target durations, the time a
    player has). A switch to METHOD=NONE fails ``coverage``. The watch ends early at
    EXT-X-ENDLIST, or on Ctrl-C/SIGTERM; the report covers what was seen.
    """
    if not duration > 0:
        raise UsageError("duration must be more than 0", option="duration")
    _check_expectations(None, expect_rotation_seconds)
    if key_within is not None and not key_within > 0:
        raise UsageError("key_within must be more than 0", option="key_within")
    fetcher = fetcher or Fetcher()
    watch = LiveWatch(duration, key_within)
    with nullcontext(keys) if keys is not None else key_chain(fetcher=fetcher, stop_after_failure=False) as chain, \
            patient_keys(chain, key_patience, clock):
        live, first, chosen = open_live(source, fetcher, variant=variant, key_id_param=key_id_param, clock=clock)
        observer = _LiveObserver(chain, watch, clock)
        jobs = jobs or live_jobs(live, first)
        runner: Runner[Buffer | FetchError | None] = Runner(partial(_fetch_for_check, keys=chain, fetcher=fetcher),
                                                            jobs, 2 * jobs)
        start = clock()
        loop = FollowLoop(live, first, Sequencer(), runner, observer, deadline=start + duration)
        stopped: str | None = None
        try:
            stopped = loop.run()
        finally:
            runner.close(wait=False)
            observer.close(wait=stopped is not None and stopped != INTERRUPTED)
        watch.watched, watch.stopped = clock() - start, stopped or watched_for(duration)
        watch.reloads, watch.target, watch.longest_wait = live.reloads, live.target, loop.longest_wait
    playlist = MediaPlaylist(live.uri, tuple(observer.parts), loop.ended)
    case = _Case(playlist, observer.seen, strict, None, None, expect_rotation_seconds, watch)
    checks = [_check(name, *judge(case)) for name, judge in CHECKS + LIVE_CHECKS]
    return Report(source, live.uri, chosen.uri if chosen else None, len(playlist.segments), len(playlist.parts),
                  len(playlist.keys), checks, _timeline(playlist, observer.seen, case.iv_uses), None,
                  expect_rotation_seconds, watch.as_json())


def _fetch_for_check(part: Part, *, keys: KeyChain, fetcher: Fetcher) -> Buffer | FetchError | None:
    """A part's bytes as served, once its key is resolved (waited for here, on a worker, not in the loop)."""
    if part.gap:
        return None
    try:
        raw = fetcher.read(part.uri, part.byterange)
    except FetchError as exc:
        return exc
    if part.key is not None and part.cipher is not None:
        try:
            keys.get(part.key)
        except KeyUnavailable:
            pass  # observing the part records why
    return raw


class _LiveObserver:
    """verify_live's hooks: observe each part in order, time each new key, note what the channel does."""

    def __init__(self, keys: KeyChain, watch: LiveWatch, clock: Callable[[], float]):
        self.keys, self.watch, self.clock = keys, watch, clock
        self.seen = _Observed()
        self.parts: list[Part] = []  # a report covers every part seen: this grows, as a report does
        self._previous: Part | None = None
        self._waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hlsdecrypt-keywatch")
        self._fetched: dict[str, Future[float | None]] = {}

    def taken(self, parts: tuple[Part, ...], reload: Reload) -> None:
        self.keys.prefetch(p for p in parts if not p.gap)
        new = {p.sequence for p in parts}
        self.watch.dates.update((q, t) for q, t in program_dates(reload.text, reload.playlist).items() if q in new)
        for part in parts:
            ref = part.key
            if ref is not None and ref.identity not in self.watch.appeared:
                self.watch.appeared[ref.identity] = reload.done
                # keys resolve one at a time in order of first use, so one waiter times each as it comes
                self._fetched[ref.identity] = self._waiter.submit(self._resolved_at, ref)

    def _resolved_at(self, ref: KeyRef) -> float | None:
        try:
            self.keys.get(ref)
        except KeyUnavailable:
            return None
        return self.clock()

    def lost(self, first: int, last: int, why: str) -> None:
        self.watch.lost.append(f"{segments_named(first, last)}: {why}")
        self.watch.lost_segments += last - first + 1

    def note(self, kind: str, text: str) -> None:
        (self.watch.discontinuities if kind == DISCONTINUITY else self.watch.went_back).append(text)

    def stalled(self, after: int | None, seconds: float, over: bool) -> None:
        if over:
            where = f" after segment {after}" if after is not None else " from the start"
            self.watch.stalls.append(f"no new segment for {seconds:.1f} s{where}")

    def reload_failed(self, error: HlsDecryptError, since: float) -> None:
        self.watch.reload_failures.append(f"reloading the playlist failed: {error}")  # the watch goes on

    def deliver(self, part: Part, raw: Buffer | FetchError | None) -> None:
        self.parts.append(part)
        if part.gap:
            self.seen.gaps.append(part)
        elif isinstance(raw, FetchError):
            self.seen.fault(self.seen.unfetched, part, raw.message)
        elif raw is not None:
            _observe(part, raw, self._previous, self.keys, self.seen)
        self._previous = part

    def close(self, *, wait: bool) -> None:
        """Record how long each key took; after a whole watch, the last ones are a moment away."""
        if wait:
            wait_for(self._fetched.values(), timeout=5.0)
        for identity, future in self._fetched.items():
            done = future.done() and not future.cancelled() and future.exception() is None
            at = future.result() if done else None
            self.watch.key_times[identity] = at - self.watch.appeared[identity] if at is not None else None
        self._waiter.shutdown(wait=False, cancel_futures=True)
