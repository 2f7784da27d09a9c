"""How long to wait between attempts: capped exponential backoff with full jitter, and what a
server's ``Retry-After`` asks for.

Whether to retry is the caller's decision (it knows which errors are transient); this module
only spaces the attempts. The clock, its sleep and the random source are injectable so that
tests run instantly and deterministically.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable, Iterator

from . import stop

_DELAY_SECONDS = re.compile(r"[0-9]+(\.[0-9]+)?")  # RFC 9110 wants digits; a fraction is read, not refused


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float:
    """Seconds a ``Retry-After`` header asks to wait (RFC 9110 §10.2.3): delay-seconds or an HTTP date.

    A date is counted from ``now`` (the current time by default); one in the past means no wait,
    never a negative one. A value that is neither means 0: the backoff alone then decides.
    """
    text = (value or "").strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    if when.tzinfo is None:  # asctime dates and "-0000" carry no zone; HTTP dates are always GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


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
