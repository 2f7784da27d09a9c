"""How long to wait between attempts: capped exponential backoff with full jitter, and what a
server's ``Retry-After`` asks for.

Whether to retry is the caller's decision (it knows which errors are transient); this module
only spaces the attempts. The clock, its sleep and the random source are injectable so that
tests run instantly and deterministically.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Callable, Iterator, TypeVar

from . import stop

log = logging.getLogger("hlsdecrypt")
T = TypeVar("T")

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

    def run(self, attempt: Callable[[], T], *, retry_on: Callable[[Exception], Retry | None],
            give_up: Callable[[Exception, int], Exception], what: str) -> T:
        """``attempt()`` until it succeeds, ``retry_on`` says an error is final, or the attempts
        run out (then ``give_up(last error, attempts made)`` is raised).

        Whether to retry is the caller's decision (``retry_on``: None for final, else why and how
        long the server asked to wait); how long to wait is this object's.
        """
        delays = self.delays()
        made = 1
        while True:
            try:
                return attempt()
            except Exception as exc:  # noqa: BLE001 - the caller's classifier decides
                verdict = retry_on(exc)
                if verdict is None:
                    raise
                delay = next(delays, None)
                if delay is None:
                    raise give_up(exc, made) from None
                log.info("%s: %s; retrying in %.1fs", what, verdict.reason, delay)
                self.wait(delay, verdict.after)
                made += 1


@dataclass(frozen=True)
class Retry:
    """An attempt failed in a way another may mend; the server may have asked to wait ``after`` seconds."""

    reason: str
    after: float = 0.0
