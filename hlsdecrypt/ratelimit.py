"""A request-rate limit shared by every thread and every hlsdecrypt process of one account.

The account's next allowed send time lives in a small lock file (named by a hash of the access
key, never the key itself); each request takes the file's lock, waits until that time, and
moves it on by one interval. Another process on the same machine therefore queues behind it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Callable

#: Sends are spaced a little wider than the limit, so that jitter on the way cannot make two
#: requests arrive closer than the service allows.
MARGIN = 0.05


def lock_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hlsdecrypt"


class RateLimiter:
    def __init__(self, rate: float, account: str, *, directory: Path | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate + MARGIN
        directory = directory or lock_dir()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = directory / f"rate-{hashlib.sha256(account.encode()).hexdigest()[:16]}"
        self._clock, self._sleep = clock, sleep
        self._thread_lock = threading.Lock()

    def acquire(self) -> None:
        """Block until this process may send one request, and book the slot."""
        with self._thread_lock:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                raw = os.pread(fd, 64, 0)
                try:
                    allowed = float(raw.decode() or 0)
                except ValueError:
                    allowed = 0.0
                now = self._clock()
                if allowed > now + 3600:  # a clock that jumped back, or a corrupt file
                    allowed = now
                if allowed > now:
                    self._sleep(allowed - now)
                    now = allowed
                data = repr(now + self.interval).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
            finally:
                os.close(fd)  # releases the lock
