"""A request-rate limit shared by every thread and every hlsdecrypt process of one account.

The limit is what the *server* sees, and the client cannot know when its request reaches the
server: a new connection, a TLS handshake or a busy CPU delay it by an unknown amount. What the
client does know is that the server had the request before it answered. So each request holds
the account's one turn while it is in flight, and the next may be sent one interval after the
previous one's answer came back. Whatever happened on the way, two requests arrive at least one
interval apart.

The state (when the next request may go; until when the request in flight holds the turn) lives
in a small file named by a hash of the account, never the access key itself, under an exclusive
lock taken only to read and write it: nobody sleeps holding the lock, so a process stopped with
Ctrl-Z holds up the others at most until its lease runs out.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Protocol

from . import stop
from .errors import UsageError

#: Added to every interval: the clocks of two machines, or a server's own bookkeeping, may
#: differ by a few milliseconds.
MARGIN = 0.01
#: How often a waiting process looks whether the request in flight has come back.
POLL = 0.02
_owners = itertools.count(1)


def lock_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hlsdecrypt"


class Limiter(Protocol):
    """What the API client needs of a limit: this machine's (RateLimiter) or a fleet's (in Redis)."""

    def turn(self) -> ContextManager[None]: ...


class RateLimiter:
    """``with limiter.turn(): send the request and read the answer``."""

    def __init__(self, rate: float, account: str, *, directory: Path | None = None, lease: float = 60.0,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = stop.pause):
        """``lease``: how long a request may hold the turn before others take it (longer than any
        request may take); ``clock`` must be shared by all processes, hence wall time."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate + MARGIN
        self.lease = lease
        directory = directory or lock_dir()
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise UsageError(f"rate-limit folder {directory}: {exc.strerror}") from None
        self.path = directory / f"rate-{hashlib.sha256(account.encode()).hexdigest()[:16]}"
        self._clock, self._sleep = clock, sleep

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for the account's turn, hold it while the body runs, and pass it on an interval later."""
        owner = f"{os.getpid()}.{next(_owners)}"
        while True:
            with self._state() as state:
                now = self._clock()
                next_send, held_until, holder = state.read(now)
                if held_until <= now and next_send <= now:
                    state.write(next_send, now + self.lease, owner)
                    break
            wait = next_send - now if held_until <= now else min(POLL, held_until - now)
            self._sleep(max(wait, 0.001))
        try:
            yield
        finally:
            with self._state() as state:
                now = self._clock()
                next_send, held_until, holder = state.read(now)
                if holder == owner:
                    held_until = 0.0
                state.write(max(next_send, now + self.interval), held_until, holder)

    def acquire(self) -> None:
        """Take a turn for a request that is sent at once and answered at once (tests, tools)."""
        with self.turn():
            pass

    @contextmanager
    def _state(self) -> Iterator["_State"]:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise UsageError(f"rate-limit file {self.path}: {exc.strerror} (a symlink there is refused)") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UsageError(f"rate-limit file {self.path}: not a regular file")
            fcntl.flock(fd, fcntl.LOCK_EX)  # held for a read and a write, never across a wait
            yield _State(fd)
        finally:
            os.close(fd)  # releases the lock


class _State:
    """``next_send held_until holder`` in one line of text."""

    def __init__(self, fd: int):
        self._fd = fd

    def read(self, now: float) -> tuple[float, float, str]:
        fields = os.pread(self._fd, 256, 0).decode("ascii", "replace").split()
        try:
            next_send, held_until = float(fields[0]), float(fields[1])
            holder = fields[2]
        except (IndexError, ValueError):
            return 0.0, 0.0, ""
        if next_send > now + 3600 or held_until > now + 3600:  # a clock that jumped back, or a corrupt file
            return now, 0.0, ""
        return next_send, held_until, holder

    def write(self, next_send: float, held_until: float, holder: str) -> None:
        data = f"{next_send!r} {held_until!r} {holder}\n".encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
