"""How long to wait between attempts: capped exponential backoff with full jitter.

Whether to retry is the caller's decision (it knows which errors are transient); this module
only spaces the attempts. The clock's sleep and the random source are injectable so that tests
run instantly and deterministically.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterator

from . import stop


@dataclass
class Backoff:
    attempts: int = 4  # total tries, the first included
    base: float = 0.5
    cap: float = 20.0
    sleep: Callable[[float], None] = stop.pause  # ends at once on Ctrl-C
    rng: random.Random = field(default_factory=random.Random)

    def delays(self) -> Iterator[float]:
        """The waits before the 2nd, 3rd, ... attempt: uniform in [0, min(cap, base * 2**n)]."""
        for n in range(self.attempts - 1):
            yield self.rng.uniform(0, min(self.cap, self.base * 2**n))

    def wait(self, delay: float, at_least: float = 0.0) -> None:
        """Sleep ``delay``, or longer when the server asked for it (``Retry-After``)."""
        self.sleep(max(delay, min(at_least, self.cap * 3)))
