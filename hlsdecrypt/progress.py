"""What a run shows while it works: one redrawn line on a terminal, a plain line now and then in a log.

On a terminal the line is drawn at once (``fetching playlist…``), redrawn as parts are written
(at most ``hz`` times a second, so that its cost does not show in a benchmark) and by a ticker
thread while nothing moves, so that two minutes of waiting for the key API never look like a
hang::

    42% 41/98 parts  130/309 MB  11.4 MB/s  0:12 elapsed  ETA 0:16

When stderr is not a terminal (a batch job's log), the same line is printed as a plain line every
``every`` seconds and at each tenth of the way, and not at all for a run shorter than that.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable, Sequence, TextIO

if TYPE_CHECKING:
    from .keys import KeyProgress

#: The display drawing on each stream (by id), so that log records and Ctrl-C can step around its line.
_showing: dict[int, Progress] = {}


class Progress:
    """A progress display for one stream; ``ProgressSink`` of the pipeline.

    ``keys``: where to read how far the key chain is (``KeyChain.progress``); ``label`` starts the
    line (``[3/10] `` in a batch); ``transient``: wipe the line at the end instead of keeping it
    (a batch prints its own line per stream); ``tty``: redraw one line (default: whether ``stream``
    is a terminal); ``ticker``: redraw from a thread while nothing moves (off in unit tests, which
    call ``tick`` with their own ``clock``).
    """

    def __init__(self, stream: TextIO = sys.stderr, *, keys: Callable[[], KeyProgress] | None = None, label: str = "",
                 transient: bool = False, tty: bool | None = None, hz: float = 8.0, every: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, ticker: bool = True):
        self.stream, self.keys, self.label, self.transient = stream, keys, label, transient
        self.tty = _isatty(stream) if tty is None else tty
        self.period, self.every, self.clock = 1.0 / hz, every, clock
        self.began = clock()
        self.status_text = ""
        self.started = False
        self.parts = self.done = self.run_parts = 0
        self.bytes = self.run_bytes = 0
        self.run_began = self.began
        self._expected: list[int | None] = []
        self._known_left = 0  # bytes still to come from parts whose size is known
        self._unknown_left = 0  # parts still to come whose size is not
        self._unknown_done = self._unknown_bytes = 0  # those done so far, to estimate the rest
        self._drawn_at = float("-inf")
        self._line_open = False
        self._drawn = False  # anything drawn at all: then the last state is drawn at the end
        self._last = ""
        self._printed = 0  # plain lines printed
        self._printed_at, self._printed_tenth = self.began, 0
        self._finished = False
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ticker = ticker

    # -- the pipeline's side (ProgressSink) ---------------------------------------------

    def status(self, text: str) -> None:
        """What happens before any part is written (``fetching playlist…``): shown at once on a terminal."""
        with self._lock:
            self.status_text = text
            self._show()
            self._draw(force=True)

    def start(self, parts: int, *, done: int = 0, done_bytes: int = 0, sizes: Sequence[int | None] = ()) -> None:
        """``parts`` in all, of which ``done`` (``done_bytes``) an earlier run wrote; ``sizes``: what each
        part still to come will weigh, where that is known before fetching (None where not)."""
        with self._lock:
            self.started = True
            self.parts, self.done, self.bytes = parts, done, done_bytes
            self.run_parts = self.run_bytes = 0
            self.run_began = self.clock()
            left = parts - done
            self._expected = list(sizes)[:left] + [None] * max(0, left - len(sizes))
            self._known_left = sum(size for size in self._expected if size is not None)
            self._unknown_left = sum(size is None for size in self._expected)
            self._show()
            self._draw(force=True)

    def advance(self, size: int) -> None:
        """The next part, in order, is written: ``size`` clear bytes."""
        with self._lock:
            expected = self._expected[self.run_parts] if self.run_parts < len(self._expected) else None
            if expected is None:
                self._unknown_left = max(0, self._unknown_left - 1)
                self._unknown_done += 1
                self._unknown_bytes += size
            else:
                self._known_left -= expected
            self.done += 1
            self.run_parts += 1
            self.bytes += size
            self.run_bytes += size
            self._draw()

    def finish(self) -> None:
        """The end, however it came: the last state stays on the terminal (or is wiped, if transient)."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self._stop.set()
            if self.tty:
                if self.transient:
                    self.wipe()
                elif self._drawn:
                    self._write("\r\x1b[2K" + self._fit(self.line()) + "\n")
                    self._line_open = False
            elif self._printed:
                self._print_plain()
            _showing.pop(id(self.stream), None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    # -- stepping around log records and interruptions -----------------------------------

    def wipe(self) -> None:
        """Clear the line, so that a log record takes its place; the next redraw brings it back."""
        with self._lock:
            if self._line_open:
                self._write("\r\x1b[2K")
                self._line_open = False
                self._drawn_at = float("-inf")

    def end_line(self) -> None:
        """Leave the line as it is and move below it (Ctrl-C: the message that follows starts a line of its own)."""
        with self._lock:
            if self._line_open:
                self._write("\n")
                self._line_open = False

    # -- what the line says ----------------------------------------------------------------

    def line(self) -> str:
        now = self.clock()
        elapsed = f"{_clock(now - self.began)} elapsed"
        keys = self.keys() if self.keys else None
        waiting = keys is not None and keys.resolved < keys.needed and keys.asking
        if not self.started:
            pieces = [self.status_text, elapsed] if self.status_text else [elapsed]
        else:
            total, estimated = self.total_bytes()
            fraction = (self.bytes / total if total else 1.0) if total is not None else \
                (self.done / self.parts if self.parts else 1.0)
            shown = max(total or 0, self.bytes)
            size = f"{_mb(self.bytes, shown)}/{'~' if estimated else ''}{_mb(shown, shown)} MB" \
                if total is not None else f"{_mb(self.bytes, self.bytes)} MB"
            pieces = [f"{int(100 * min(fraction, 1.0))}% {self.done}/{self.parts} parts", size]
            seconds = now - self.run_began
            if self.run_bytes and seconds > 0:
                pieces.append(_rate(self.run_bytes / seconds))
            pieces.append(elapsed)
            left = self._seconds_left(total, seconds, keys)
            if left is not None and self.done < self.parts:
                pieces.append(f"ETA {_clock(left)}")
        if waiting:
            assert keys is not None
            before = "waiting for " if not self.run_parts else ""
            pieces.append(f"{before}key {keys.resolved + 1} of {keys.needed} ({keys.asking})")
        return self.label + "  ".join(pieces)

    def total_bytes(self) -> tuple[int | None, bool]:
        """The size of the whole output, and whether it is an estimate (None: no idea yet).

        Known sizes (local files, byte ranges) are the ciphertext's, at most 16 bytes a part more
        than the clear bytes; parts over http(s) are estimated from those already fetched."""
        if not self._unknown_left:
            return self.bytes + self._known_left, False
        if self._unknown_done:
            mean = self._unknown_bytes / self._unknown_done
        elif self.done:
            mean = self.bytes / self.done
        else:
            return None, True
        return self.bytes + self._known_left + round(mean * self._unknown_left), True

    def _seconds_left(self, total: int | None, seconds: float, keys: KeyProgress | None) -> float | None:
        """By the bytes still to come at this run's rate; no sooner than the keys still to come allow."""
        left = None
        if total is not None and self.run_bytes and seconds > 0:
            left = max(0, total - self.bytes) / (self.run_bytes / seconds)
        elif total is None and self.run_parts and seconds > 0:
            left = (self.parts - self.done) * seconds / self.run_parts
        if keys is not None and keys.rate and keys.needed > keys.resolved:
            left = max(left or 0.0, (keys.needed - keys.resolved) / keys.rate)
        return left

    # -- drawing ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Redraw if the time has come: on a terminal every tick, in a log every ``every`` seconds or tenth."""
        with self._lock:
            if self._finished:
                return
            if self.tty:
                self._draw(force=True)
            elif self._plain_due():
                self._print_plain()

    def _draw(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._drawn_at < self.period:  # at most hz times a second, in a log too
            return
        self._drawn_at = now
        if not self.tty:
            if self._plain_due():
                self._print_plain()
            return
        text = self._fit(self.line())
        if text != self._last or not self._line_open:  # a ticker's redraw of the same line costs nothing
            self._write("\r\x1b[2K" + text)
        self._last = text
        self._line_open = self._drawn = True

    def _plain_due(self) -> bool:
        now = self.clock()
        since = now - self._printed_at
        tenth = self._tenth()
        return since >= self.every or (tenth > self._printed_tenth and since >= self.every / 5)

    def _tenth(self) -> int:
        if not self.started or not self.parts:
            return 0
        total, _ = self.total_bytes()
        fraction = self.bytes / total if total else self.done / self.parts
        return int(10 * min(fraction, 1.0))

    def _print_plain(self) -> None:
        self._write(f"hlsdecrypt: {self.line()}\n")
        self._printed += 1
        self._printed_at, self._printed_tenth = self.clock(), self._tenth()

    def _fit(self, text: str) -> str:
        """Cut to the terminal's width: a line that wraps cannot be redrawn in place."""
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            width = 0
        return text[:max(width or 80, 21) - 1]

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed terminal must not end the run
            pass

    def _show(self) -> None:
        """Register as the stream's display, and start the ticker, on the first thing shown."""
        _showing[id(self.stream)] = self
        if self._ticker and self._thread is None:
            self._thread = threading.Thread(target=self._tick_until_finished, name="hlsdecrypt-progress",
                                            daemon=True)
            self._thread.start()

    def _tick_until_finished(self) -> None:
        step = 0.25 if self.tty else 1.0
        while not self._stop.wait(step):
            self.tick()


def end_line(stream: TextIO) -> None:
    """Move below the progress line drawn on ``stream``, if one is open (before ``interrupted``)."""
    display = _showing.get(id(stream))
    if display is not None:
        display.end_line()


class LogHandler(logging.StreamHandler):
    """Log records while a progress line is drawn: the line is wiped first, and comes back at the next redraw."""

    def emit(self, record: logging.LogRecord) -> None:
        display = _showing.get(id(self.stream))
        if display is not None:
            display.wipe()
        super().emit(record)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    """``0:12``, ``12:05``, ``1:02:03``."""
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _mb(size: float, scale: float) -> str:
    """Megabytes, with decimals while the whole is small enough for them to matter."""
    return f"{size / 1e6:,.2f}" if scale < 10e6 else f"{size / 1e6:,.1f}" if scale < 100e6 else f"{size / 1e6:,.0f}"


def _rate(per_second: float) -> str:
    """``11.4 MB/s``; on a slow link ``96 kB/s``, not ``0.1 MB/s``."""
    return f"{per_second / 1e6:,.1f} MB/s" if per_second >= 1e6 else f"{per_second / 1e3:,.0f} kB/s"
