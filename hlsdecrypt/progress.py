"""A one-line progress display on a terminal: parts, bytes, rate, ETA."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


class Progress:
    """Redraws at most ``hz`` times a second, so that its cost does not show in a benchmark."""

    def __init__(self, stream: TextIO = sys.stderr, *, hz: float = 8.0,
                 clock: Callable[[], float] = time.monotonic):
        self.stream, self.clock = stream, clock
        self.period = 1.0 / hz
        self.total = self.done = self.bytes = 0
        self.started = self._drawn = 0.0

    def start(self, parts: int) -> None:
        self.total, self.started = parts, self.clock()

    def advance(self, size: int) -> None:
        self.done += 1
        self.bytes += size
        now = self.clock()
        if now - self._drawn >= self.period:
            self._drawn = now
            self._draw()

    def finish(self) -> None:
        self._draw()
        self.stream.write("\n")
        self.stream.flush()

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        left = (self.total - self.done) * elapsed / self.done if self.done else 0.0
        return (f"{self.done}/{self.total} parts  {self.bytes / 1e6:,.1f} MB  {self.bytes / elapsed / 1e6:,.1f} MB/s  "
                f"ETA {int(left) // 60}:{int(left) % 60:02d}")

    def _draw(self) -> None:
        self.stream.write("\r\x1b[2K" + self.line())
        self.stream.flush()
