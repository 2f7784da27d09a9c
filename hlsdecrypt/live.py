"""Live streams: follow a media playlist as it grows, and hand out each new segment once, in order.

The playlist is reloaded as RFC 8216 §6.3.4 says: a target duration after a reload that brought
new segments, half of one after a reload that did not. Segments are told apart by their media
sequence number alone (the URIs of a live stream may carry signatures that change from one
reload to the next), so the bookkeeping is a few numbers however long the follow lasts: the last
sequence taken, the init section in force, the media seconds taken. A jump in the sequence is a
gap (segments that left the window unseen, listed); a playlist that goes back is reported, and
nothing is taken twice.

``follow`` decrypts a live stream into one file while it is recorded; ``verify.verify_live``
watches a channel's encryption with the same loop.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import BinaryIO, Callable, Generic, Iterable, Iterator, Protocol, TypeVar
from urllib.parse import urlsplit

from . import stop
from .api import NOT_FOUND_CODES, ApiKeySource
from .crypto import Buffer, DataKey, decrypt_cbc
from .errors import ApiError, DecryptError, FetchError, HlsDecryptError, InputError, UsageError, plural
from .fetch import Fetcher
from .keys import KeyChain
from .media import start_problem
from .output import BackgroundWriter, Output
from .pipeline import (HTTP_JOBS, MAX_MASTER_DEPTH, WRITE_AHEAD, _chain, _output_errors, _pick, default_jobs,
                       errors_about, output_name, prepare_output)
from .playlist import KeyRef, MediaPlaylist, Part, Variant, parse
from .uris import is_url

log = logging.getLogger("hlsdecrypt")

T = TypeVar("T")
R = TypeVar("R", contravariant=True)

#: When a playlist has no usable EXT-X-TARGETDURATION and no segment to judge by.
DEFAULT_TARGET = 6.0
#: Never reload more often than this, whatever a playlist claims.
MIN_RELOAD = 0.05
#: A channel that publishes nothing new for this many target durations has stalled (a player
#: starts three target durations from the live edge, so by then it has run dry).
STALL_TARGETS = 3
#: How long a KeyID that the API does not know yet is asked for again: the shortest key period
#: the live service allows (CycleTime 60 s). A key that cannot be had within one key period is
#: not late, it is missing.
KEY_PATIENCE = 60.0
#: How long the playlist may fail to reload (after the fetcher's own retries) before the follow
#: ends with that error: an origin's hiccup is not the end of a channel.
RELOAD_PATIENCE = 30.0
#: Listed gaps and events kept for the result; beyond these, only counted (memory stays flat).
LIST_LIMIT = 100

ENDED = "the playlist ended (EXT-X-ENDLIST)"
WENT_BACK, DISCONTINUITY = "went-back", "discontinuity"  # what the sequencer notes
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"


def duration_reached(seconds: float) -> str:
    return f"{format_seconds(seconds)} of media written (--duration)"


def watched_for(seconds: float) -> str:
    return f"watched for {format_seconds(seconds)}"


# -- durations ----------------------------------------------------------------------------

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def parse_duration(text: str, option: str = "duration") -> float:
    """``2h``, ``90m``, ``1h30m``, ``45s``, ``1.5`` (seconds) -> seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or not match or not any(match.groups()):
        raise UsageError(f"{option} {text!r}: want a time such as 2h, 90m, 1h30m, 45s or 30", option=option)
    hours, minutes, seconds = (float(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise UsageError(f"{option} {text!r}: must be more than 0", option=option)
    return total


def format_seconds(seconds: float) -> str:
    """``1:02:03``, ``4:05``, or ``2.5 s`` below a minute."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


# -- what a playlist's text says beyond its parts -----------------------------------------

_TARGET = re.compile(r"^\s*#EXT-X-TARGETDURATION:\s*([0-9]+(?:\.[0-9]+)?)", re.MULTILINE)
_DATE = "#EXT-X-PROGRAM-DATE-TIME:"


def target_duration(text: str, playlist: MediaPlaylist) -> float:
    """EXT-X-TARGETDURATION (a decimal one is read as it is), else the longest segment."""
    match = _TARGET.search(text)
    value = float(match.group(1)) if match else 0.0
    if not 0 < value < float("inf"):  # 400 nines read as inf, which no reload may wait and no report carry
        value = max((p.duration for p in playlist.segments), default=0.0) or DEFAULT_TARGET
    return max(value, MIN_RELOAD)


def program_dates(text: str, playlist: MediaPlaylist) -> dict[int, float]:
    """Media sequence -> EXT-X-PROGRAM-DATE-TIME (POSIX seconds), for the segments that have one.

    A date applies to the next segment; later segments carry it on by their durations
    (RFC 8216 §4.3.2.6). Dates that do not parse are left out: decryption never needs them.
    """
    at_line = {p.line: p for p in playlist.segments}
    dates: dict[int, float] = {}
    pending: float | None = None
    carried: float | None = None
    for n, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        line = line.strip()
        if line.startswith(_DATE):
            try:
                value = line[len(_DATE):].strip()
                value = value[:-1] + "+00:00" if value[-1:] in "zZ" and value else value  # Python 3.10 wants it so
                pending = datetime.fromisoformat(value).timestamp()
            except ValueError:
                pending = None
        elif n in at_line:
            part = at_line[n]
            when = pending if pending is not None else carried
            pending = None
            if when is not None and part.sequence is not None:
                dates[part.sequence] = when
                carried = when + part.duration
            else:
                carried = None
    return dates


# -- bookkeeping of media sequence numbers -------------------------------------------------

@dataclass(frozen=True)
class Batch:
    """What one reload brought: new parts in order (init sections where the one in force
    changes), the sequence numbers that left the window unseen, and what is worth reporting."""

    new: tuple[Part, ...]
    lost: tuple[int, int] | None
    notes: tuple[tuple[str, str], ...]  # (WENT_BACK or DISCONTINUITY, what happened)


def init_identity(part: Part) -> str:
    """Tells init sections apart across reloads: the URI without its query (which may carry a
    signature that changes), and the byte range."""
    split = urlsplit(part.uri)
    where = f"{split.scheme}://{split.netloc}{split.path}" if is_url(part.uri) else part.uri
    byterange = f"@{part.byterange.offset}+{part.byterange.length}" if part.byterange else ""
    return where + byterange


class Sequencer:
    """Hands out each segment once, in media-sequence order, whatever the reloads show.

    It remembers the last sequence taken, the init section in force and the first sequence of
    the last playlist: nothing that grows with the stream.
    """

    def __init__(self, after: int | None = None, init: str | None = None):
        """``after``: the last sequence an earlier run took (resume); ``init``: its init section."""
        self.last = after
        self.init = init
        self._first: int | None = None
        self._behind = False

    def take(self, playlist: MediaPlaylist) -> Batch:
        segments = playlist.segments
        if not segments:
            return Batch((), None, ())
        first, end = segments[0].sequence, segments[-1].sequence
        assert first is not None and end is not None  # media segments have sequences
        notes: list[tuple[str, str]] = []
        if self._first is not None and first < self._first:
            notes.append((WENT_BACK, f"EXT-X-MEDIA-SEQUENCE went back from {self._first} to {first}"))
        self._first = first
        if self.last is not None and end < self.last:
            if not self._behind:  # once per stay behind, not once per reload
                notes.append((WENT_BACK, f"the playlist went back: it ends at segment {end}, after segment "
                                         f"{self.last} was taken; nothing is taken twice"))
            self._behind = True
            return Batch((), None, tuple(notes))
        self._behind = False
        lost = (self.last + 1, first - 1) if self.last is not None and first > self.last + 1 else None
        new: list[Part] = []
        init: Part | None = None
        for part in playlist.parts:
            if part.is_init:
                init = part
                continue
            assert part.sequence is not None
            if self.last is not None and part.sequence <= self.last:
                continue
            if init is not None and init_identity(init) != self.init:
                new.append(init)
                self.init = init_identity(init)
            if part.discontinuity:
                notes.append((DISCONTINUITY, f"{part.label}: a discontinuity (EXT-X-DISCONTINUITY)"))
            new.append(part)
            self.last = part.sequence
        return Batch(tuple(new), lost, tuple(notes))


def segments_named(first: int, last: int) -> str:
    return f"segment {first}" if first == last else f"segments {first}-{last}"


# -- the playlist, reloaded ---------------------------------------------------------------

@dataclass(frozen=True)
class Reload:
    playlist: MediaPlaylist
    text: str
    began: float  # when the request went out
    done: float  # when the playlist was in hand


class LivePlaylist:
    """A media playlist reloaded on the RFC's schedule, through ``fetcher``."""

    def __init__(self, uri: str, fetcher: Fetcher, key_id_param: str | None, clock: Callable[[], float]):
        self.uri = uri  # reloaded as given: a redirect may lead to a short-lived address
        self.fetcher, self.key_id_param, self.clock = fetcher, key_id_param, clock
        self.target = DEFAULT_TARGET
        self.reloads = 0

    def load(self) -> Reload:
        began = self.clock()
        text, reached = self.fetcher.read_playlist(self.uri)
        playlist = parse(text, reached, key_id_param=self.key_id_param)
        if not isinstance(playlist, MediaPlaylist):
            raise InputError(f"{self.uri}: became a master playlist while it was followed")
        return self.loaded(playlist, text, began)

    def loaded(self, playlist: MediaPlaylist, text: str, began: float) -> Reload:
        self.target = target_duration(text, playlist)
        self.reloads += 1
        return Reload(playlist, text, began, self.clock())

    def next_after(self, began: float, changed: bool) -> float:
        """When to reload next: a target duration after a change, half of one after none."""
        return began + max(self.target if changed else self.target / 2, MIN_RELOAD)


def live_jobs(live: LivePlaylist, first: Reload) -> int:
    """Parts fetched at once, as for a recording; a playlist with no segment yet is judged by its own URI."""
    return default_jobs(first.playlist) if first.playlist.parts else HTTP_JOBS if is_url(live.uri) else 1


def open_live(source: str, fetcher: Fetcher, *, variant: str = "best", key_id_param: str | None = None,
              clock: Callable[[], float] = time.monotonic) -> tuple[LivePlaylist, Reload, Variant | None]:
    """The media playlist to follow (through a master playlist, to the chosen variant) and its first load.

    Unlike a recording's, a live playlist may list no segment yet: the channel is starting.
    """
    fetcher.set_origin(source)
    uri, chosen = source, None
    for _ in range(MAX_MASTER_DEPTH + 1):
        began = clock()
        text, reached = fetcher.read_playlist(uri)
        playlist = parse(text, reached, key_id_param=key_id_param)
        if isinstance(playlist, MediaPlaylist):
            live = LivePlaylist(uri, fetcher, key_id_param, clock)
            return live, live.loaded(playlist, text, began), chosen
        chosen = _pick(playlist, variant)
        uri = chosen.uri
    raise InputError(f"{source}: master playlists nested more than {MAX_MASTER_DEPTH} deep")


# -- fetching ahead, delivering in order ---------------------------------------------------

class Runner(Generic[T]):
    """Runs ``task`` on parts, ``jobs`` at a time, and gives the results back in order.

    At most ``ahead`` parts are in flight or done and not yet delivered (their bytes are what
    memory holds); more wait as parts, which are small, until there is room or until the
    playlist's window has moved on without them. ``wake`` is set whenever a result is ready.
    """

    def __init__(self, task: Callable[[Part], T], jobs: int, ahead: int):
        self._task = task
        self._pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="hlsdecrypt-follow")
        self._ahead = ahead
        self._window: deque[tuple[Part, Future[T]]] = deque()
        self._backlog: deque[Part] = deque()
        self.wake = threading.Event()

    @property
    def idle(self) -> bool:
        return not self._window and not self._backlog

    def add(self, parts: Iterable[Part]) -> None:
        self._backlog.extend(parts)
        self._fill()

    def left_window(self, first: int) -> list[tuple[int, int]]:
        """Drop waiting segments numbered below ``first``: the playlist no longer lists them,
        so they cannot be fetched any more. Returns the runs of sequence numbers dropped."""
        runs: list[tuple[int, int]] = []
        kept: deque[Part] = deque()
        for part in self._backlog:
            if part.sequence is not None and part.sequence < first:
                if runs and runs[-1][1] == part.sequence - 1:
                    runs[-1] = (runs[-1][0], part.sequence)
                else:
                    runs.append((part.sequence, part.sequence))
            else:
                kept.append(part)
        self._backlog = kept
        return runs

    def ready(self) -> Iterator[tuple[Part, T]]:
        """The results that are done at the head, in order; a task's error is raised here."""
        while self._window and self._window[0][1].done():
            part, future = self._window.popleft()
            self._fill()
            yield part, future.result()

    def close(self, *, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _fill(self) -> None:
        while self._backlog and len(self._window) < self._ahead:
            part = self._backlog.popleft()
            future = self._pool.submit(self._task, part)
            future.add_done_callback(lambda _: self.wake.set())
            self._window.append((part, future))


# -- the loop -----------------------------------------------------------------------------

class Hooks(Protocol[R]):
    """What a follow does with what the loop finds (decrypt writes, verify observes)."""

    def taken(self, parts: tuple[Part, ...], reload: Reload) -> None: ...
    def lost(self, first: int, last: int, why: str) -> None: ...
    def note(self, kind: str, text: str) -> None: ...
    def stalled(self, after: int | None, seconds: float, over: bool) -> None: ...
    def reload_failed(self, error: HlsDecryptError, since: float) -> None: ...
    def deliver(self, part: Part, result: R) -> None: ...


class FollowLoop(Generic[T]):
    """Reload, take what is new, run it, deliver it in order; until the playlist ends, enough
    media is taken (``media_limit`` seconds), the time is up (``deadline``, on ``clock``), or
    Ctrl-C/SIGTERM. ``run`` returns why it stopped.

    Stalls are judged only on reloads that happened: no new segment on a reload that began more
    than ``STALL_TARGETS`` target durations after the last reload with news had completed. A
    busy machine that reloads late therefore never sees a stall the channel did not have.
    """

    def __init__(self, live: LivePlaylist, first: Reload, sequencer: Sequencer, runner: Runner[T], hooks: Hooks[T],
                 *, media_limit: float | None = None, media_taken: float = 0.0, deadline: float | None = None):
        self.live, self.first, self.sequencer, self.runner, self.hooks = live, first, sequencer, runner, hooks
        self.media_limit, self.media_taken, self.deadline = media_limit, media_taken, deadline
        self.clock = live.clock
        self.full = self._enough()
        self.ended = False
        self.longest_wait = 0.0  # seconds between reloads with news, as far as reloads saw
        self._last_news = first.done
        self._stall_after: int | None = None
        self._stalled = False

    def run(self) -> str:
        reload: Reload | None = self.first
        next_at = self.clock()
        last_ok = self.first.done
        remove_hook = stop.on_stop(self.runner.wake.set)
        try:
            while True:
                if reload is not None:
                    changed = self._take(reload)
                    next_at = self.live.next_after(reload.began, changed)
                    last_ok, reload = reload.done, None
                for part, result in self.runner.ready():
                    self.hooks.deliver(part, result)
                timeout: float | None = None  # when done: wait for what is in flight
                if self._done():
                    if self.runner.idle:
                        break
                else:
                    due = next_at if self.deadline is None else min(next_at, self.deadline)
                    timeout = max(0.0, due - self.clock())
                    if timeout == 0.0:
                        if not self._time_up():
                            reload = self._reload(last_ok)
                            if reload is None:
                                next_at = self.live.next_after(self.clock(), False)
                        continue
                self.runner.wake.wait(timeout)
                self.runner.wake.clear()
                stop.check()
        except KeyboardInterrupt:
            self._stall_over()
            return INTERRUPTED
        finally:
            remove_hook()
        self._stall_over()
        if self.ended:
            return ENDED
        if self.full:
            return duration_reached(self.media_taken)
        return ""  # the deadline: the caller says what it was

    def _reload(self, last_ok: float) -> Reload | None:
        began = self.clock()
        try:
            return self.live.load()
        except HlsDecryptError as exc:  # the hook decides whether the follow can go on
            self.hooks.reload_failed(exc, began - last_ok)
            self._quiet(began)
            return None

    def _time_up(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    def _done(self) -> bool:
        return self.ended or self.full or self._time_up()

    def _take(self, reload: Reload) -> bool:
        batch = self.sequencer.take(reload.playlist)
        for kind, text in batch.notes:
            self.hooks.note(kind, text)
        if batch.lost:
            first, last = batch.lost
            self.hooks.lost(first, last, f"left the window before they could be fetched (the media sequence "
                                         f"jumped from {first - 1} to {last + 1})")
        parts = self._within_limit(batch.new)
        if parts:
            self.hooks.taken(parts, reload)
            self.runner.add(parts)
        segments = reload.playlist.segments
        if segments and segments[0].sequence is not None:
            for first, last in self.runner.left_window(segments[0].sequence):
                self.hooks.lost(first, last, "left the window while waiting to be fetched (fetching fell behind)")
        news = any(not p.is_init for p in batch.new)
        if news:
            self._news(reload)
        else:
            self._quiet(reload.began)
        self.ended = reload.playlist.ended
        return news

    def _within_limit(self, parts: tuple[Part, ...]) -> tuple[Part, ...]:
        if self.media_limit is None:
            return parts
        kept: list[Part] = []
        for part in parts:
            if self._enough():
                break
            kept.append(part)
            self.media_taken += part.duration
        while kept and kept[-1].is_init:  # an init section with none of its segments
            kept.pop()
        self.full = self._enough()
        return tuple(kept)

    def _enough(self) -> bool:
        # durations add up in binary: ten segments of 0.1 s make 0.9999999999999999 s
        return self.media_limit is not None and self.media_taken >= self.media_limit - 1e-6

    def _news(self, reload: Reload) -> None:
        self.longest_wait = max(self.longest_wait, reload.began - self._last_news)
        self._stall_over(reload.began)
        self._last_news = reload.done
        self._stall_after = self.sequencer.last

    def _quiet(self, began: float) -> None:
        silent = began - self._last_news
        self.longest_wait = max(self.longest_wait, silent)
        if not self._stalled and silent > STALL_TARGETS * self.live.target:
            self._stalled = True
            self.hooks.stalled(self._stall_after, silent, False)

    def _stall_over(self, now: float | None = None) -> None:
        if self._stalled:
            self._stalled = False
            self.hooks.stalled(self._stall_after, (now if now is not None else self.clock()) - self._last_news, True)


# -- keys on a live channel ---------------------------------------------------------------

class _PatientApi:
    """The API as a key source that asks again, for ``patience`` seconds, for a KeyID it does not know yet.

    Right after a rotation, ResourceNotFound means "not yet" more often than "never": the KeyID
    was just written into the playlist. ``ApiKeySource`` itself retries it twice within a few
    seconds, which suits a recording; a live channel gets up to one key period.
    """

    def __init__(self, api: ApiKeySource, patience: float, clock: Callable[[], float]):
        self._api, self._patience, self._clock = api, patience, clock
        self.name, self.rate = api.name, api.rate

    @property
    def description(self) -> str:
        return f"{self._api.description}, asking again for {self._patience:g} s for a KeyID it does not know yet"

    def lookup(self, ref: KeyRef) -> DataKey | None:
        deadline = self._clock() + self._patience
        wait = min(0.5, self._patience / 20)  # then doubling, up to 5 s between rounds
        while True:
            try:
                return self._api.lookup(ref)
            except ApiError as exc:
                left = deadline - self._clock()
                if exc.code not in NOT_FOUND_CODES or left <= 0:
                    raise
                log.info("KeyID %s: not known to the API yet; asking again in %.1f s", ref.key_id, min(wait, left))
                stop.pause(min(wait, left))
                wait = min(2 * wait, 5.0)


@contextmanager
def patient_keys(keys: KeyChain, patience: float, clock: Callable[[], float] = time.monotonic) -> Iterator[KeyChain]:
    """``keys`` with its API source patient for KeyIDs that appear before the API knows them."""
    original = keys.sources
    keys.sources = [_PatientApi(s, patience, clock) if isinstance(s, ApiKeySource) and patience > 0 else s
                    for s in original]
    try:
        yield keys
    finally:
        keys.sources = original


# -- decrypt --follow ---------------------------------------------------------------------

@dataclass(frozen=True)
class FollowResult:
    """What a follow wrote, and why it stopped."""

    source: str
    playlist: str  # the media playlist followed
    variant: Variant | None
    output: str  # a path, "-" for stdout, or a file's name
    stopped: str  # why: ENDED, INTERRUPTED, or the --duration reached
    segments: int  # segments written by this run
    bytes_written: int  # the whole output's, an earlier run's part included
    media_seconds: float  # of media in the whole output
    first_sequence: int | None  # of the segments written by this run
    last_sequence: int | None
    keys: int  # distinct keys of the segments written by this run
    gaps: tuple[str, ...] = ()  # segments missing from the output, each with why (at most LIST_LIMIT listed)
    missing: int = 0  # segments missing, all counted
    events: tuple[str, ...] = ()  # discontinuities, a playlist that went back, stalls (at most LIST_LIMIT)
    marked_gaps: int = 0  # EXT-X-GAP segments: never fetched, nothing written
    resumed_after: int = 0  # parts an earlier run had written

    @property
    def complete(self) -> bool:
        """Every segment that was published while following is in the output."""
        return self.missing == 0


class _Bounded:
    """A list that keeps its first ``limit`` items and counts the rest."""

    def __init__(self, limit: int = LIST_LIMIT):
        self.items: list[str] = []
        self.more = 0
        self._limit = limit

    def add(self, item: str) -> None:
        if len(self.items) < self._limit:
            self.items.append(item)
        else:
            self.more += 1

    def listed(self) -> tuple[str, ...]:
        return (*self.items, f"… and {self.more} more") if self.more else tuple(self.items)


class _Recorder:
    """decrypt --follow's hooks: prefetch keys, write parts in order, list gaps and events."""

    def __init__(self, out: Output, writer: BackgroundWriter, keys: KeyChain, media: float):
        self.out, self.writer, self.keys = out, writer, keys
        state = out.state or {}
        self.sequence: int | None = state.get("sequence")
        self.init: str | None = state.get("init")
        self.media = media
        self.segments = 0
        self.first: int | None = None
        self.key_ids: set[str] = set()  # keys of parts written: one per key period, not per segment
        self.announced: set[str] = set()
        self.gaps, self.events = _Bounded(), _Bounded()
        self.missing = self.marked_gaps = 0

    def taken(self, parts: tuple[Part, ...], reload: Reload) -> None:
        self.keys.prefetch(p for p in parts if not p.gap)
        for part in parts:  # a sign of life at each key period, which is a minute or more
            if part.key and part.key.identity not in self.announced:
                self.announced.add(part.key.identity)
                log.info("%s: %s, a new key", part.label, part.key.name)

    def lost(self, first: int, last: int, why: str) -> None:
        log.warning("%s %s", segments_named(first, last), why)
        self.gaps.add(f"{segments_named(first, last)}: {why}")
        self.missing += last - first + 1

    def note(self, kind: str, text: str) -> None:
        (log.info if kind == DISCONTINUITY else log.warning)("%s", text)
        self.events.add(text)

    def stalled(self, after: int | None, seconds: float, over: bool) -> None:
        where = f" after segment {after}" if after is not None else ""
        if over:
            self.events.add(f"no new segment for {seconds:.1f} s{where}")
        else:
            log.warning("no new segment for %.1f s%s: waiting", seconds, where)

    def reload_failed(self, error: HlsDecryptError, since: float) -> None:
        if since > RELOAD_PATIENCE:
            raise InputError(f"{error} (no reload has succeeded for {since:.0f} s)") from None
        log.warning("reloading the playlist failed (%s); trying again", error)

    def deliver(self, part: Part, result: Buffer | FetchError | None) -> None:
        if isinstance(result, FetchError):
            log.warning("%s", result)
            self.gaps.add(str(result))
            self.missing += 0 if part.is_init else 1
            return
        if result is None:  # EXT-X-GAP: the server has nothing there
            self.marked_gaps += 1
            return
        if part.is_init:
            self.init = init_identity(part)
        else:
            self.sequence = part.sequence
            self.media += part.duration
            self.segments += 1
            self.first = self.first if self.first is not None else part.sequence
        key = self.keys.peek(part.key) if part.key else None
        if part.key and part.cipher:
            self.key_ids.add(part.key.identity)
        state = {"sequence": self.sequence, "init": self.init, "media": round(self.media, 3)}
        self.writer.call(partial(_write_part, self.out, result, part.key.identity if part.key else None,
                                 key.fingerprint() if key else None, state))


def _write_part(out: Output, data: Buffer, identity: str | None, fingerprint: str | None, state: dict) -> None:
    """On the writer thread: the part's bytes, then the journal entry, as one queued step (an
    interrupt between two steps would leave the journal one part behind the file)."""
    out.file.write(data)
    out.part_written(len(data), identity, fingerprint, state)


def follow_plan(uri: str) -> str:
    """The journal's plan for a follow: the stream, not its parts (which keep coming). The query
    is left out, since a live URL's signature may change between runs."""
    split = urlsplit(uri)
    where = f"{split.scheme}://{split.netloc}{split.path}" if is_url(uri) else os.path.abspath(uri)
    return hashlib.sha256(f"hlsdecrypt follow\0{where}".encode()).hexdigest()


def follow(source: str, output: str | os.PathLike | BinaryIO, *, keys: KeyChain | None = None,
           fetcher: Fetcher | None = None, variant: str = "best", key_id_param: str | None = None,
           duration: float | None = None, jobs: int | None = None, media_check: bool = True, resume: bool = False,
           force: bool = False, inputs: Iterable[str] = (), key_patience: float = KEY_PATIENCE,
           clock: Callable[[], float] = time.monotonic) -> FollowResult:
    """Decrypt the live stream at ``source`` into one clear file while it is recorded.

    The playlist is reloaded and each new segment appended once, in media-sequence order, until
    ``EXT-X-ENDLIST``, until ``duration`` seconds *of media* are in the output, or until Ctrl-C or
    SIGTERM, which are a normal stop here: the output holds every segment written so far, whole,
    and is given its name. Segments that left the window before they could be fetched are
    listed in ``FollowResult.gaps``; the follow goes on. It starts at the first segment the
    playlist lists.

    ``output``, ``keys``, ``fetcher``, ``variant``, ``key_id_param``, ``jobs``, ``media_check``,
    ``force`` and ``inputs`` as for ``decrypt``. ``resume`` keeps a journal of the last segment
    written, and continues an interrupted follow after it (the segments still in the window are
    not lost). ``key_patience``: seconds a KeyID the API does not know yet is asked for again.

    An error (a key unavailable, a segment that does not decrypt, a playlist gone for good) is
    raised; the segments written before it are kept under the output's name, or, with ``resume``,
    in the partial file for the next run.
    """
    if duration is not None and not duration > 0:
        raise UsageError("duration must be more than 0", option="duration")
    fetcher = fetcher or Fetcher()
    inputs = [source, *inputs]
    output, folder = prepare_output(output, force=force, inputs=inputs)
    with _chain(keys, fetcher) as chain, patient_keys(chain, key_patience, clock):
        live, first, chosen = open_live(source, fetcher, variant=variant, key_id_param=key_id_param, clock=clock)
        target = os.path.join(folder, output_name(source, first.playlist)) if folder else output
        local = [] if is_url(live.uri) else [live.uri]
        failure: HlsDecryptError | None = None
        with Output(target, follow_plan(live.uri), resume=resume, force=force, inputs=[*inputs, *local]) as out, \
                _output_errors(target):
            resumed_after = out.parts_done
            state = out.state or {}
            if resumed_after:
                log.info("resuming after segment %s (%d parts, %d bytes written)", state.get("sequence"),
                         resumed_after, out.bytes_done)
            recorder = _Recorder(out, BackgroundWriter(out.file, WRITE_AHEAD), chain, float(state.get("media", 0.0)))
            jobs = jobs or live_jobs(live, first)
            runner: Runner[Buffer | FetchError | None] = Runner(
                partial(_clear_part, keys=chain, fetcher=fetcher, media_check=media_check), jobs, 2 * jobs)
            loop = FollowLoop(live, first, Sequencer(state.get("sequence"), state.get("init")), runner, recorder,
                              media_limit=duration, media_taken=recorder.media)
            stopped = ""
            try:
                stopped = loop.run()
            except HlsDecryptError as exc:
                if resume or not (resumed_after or recorder.segments):
                    raise  # the partial file waits for the next run, or there is nothing to keep
                failure = exc
            finally:
                runner.close(wait=False)  # idle unless stopped early: then what runs is not wanted
                recorder.writer.close()
            if failure is not None:
                log.warning("keeping the %s written before the failure in %s", plural(recorder.segments, "segment"),
                            out.target)
        if failure is not None:
            raise failure
    return FollowResult(source, live.uri, chosen, out.target, stopped, recorder.segments, out.bytes_done,
                        recorder.media, recorder.first, recorder.sequence if recorder.segments else None,
                        len(recorder.key_ids), recorder.gaps.listed(), recorder.missing, recorder.events.listed(),
                        recorder.marked_gaps, resumed_after)


def _clear_part(part: Part, *, keys: KeyChain, fetcher: Fetcher, media_check: bool) -> Buffer | FetchError | None:
    """One part's clear bytes; its FetchError (a gap, not the end of the follow); None for EXT-X-GAP."""
    if part.gap:
        return None
    with errors_about(part):
        try:
            data = fetcher.read(part.uri, part.byterange)
        except FetchError as exc:
            exc.part = exc.part or part
            return exc
        if part.cipher is None:
            return data
        ref, iv = part.cipher
        clear = decrypt_cbc(data, keys.get(ref), iv)
        problem = media_check and start_problem(clear)
        if problem:
            raise DecryptError(problem)
        keys.confirm(ref)
        return clear
