"""Where decrypted bytes go: a file that appears under its name only when complete, or stdout.

The file is written beside its target under a temporary name and renamed into place at the
end. With ``resume``, the temporary file has a fixed name (``.NAME.part``) and a journal
beside it (``.NAME.part.json``) records after each part how many parts and bytes are safely
written, a fingerprint of the plan, and fingerprints (not the values) of the keys used; a
later run with ``resume`` continues from there when the plan and keys are unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import stat
import sys
import tempfile
import threading
from typing import BinaryIO, Callable

JOURNAL_VERSION = 1


def key_fingerprint(key: bytes) -> str:
    """Tells keys apart without revealing them."""
    return hashlib.sha256(b"hlsdecrypt journal\0" + key).hexdigest()[:16]


class Output:
    """The output under construction. Use as a context manager; ``file`` is the stream to write."""

    def __init__(self, target: str, plan: str, *, resume: bool = False):
        self.target, self.plan, self.resume = target, plan, resume
        self.parts_done = 0
        self.bytes_done = 0
        self.keys: dict[str, str] = {}  # key identity -> fingerprint, for parts written
        self.resumed = False
        self.file: BinaryIO
        self._temp = ""
        self._journal = ""

    def __enter__(self) -> "Output":
        if self.target == "-":
            self.file = sys.stdout.buffer
            return self
        target = os.path.abspath(self.target)
        folder, name = os.path.split(target)
        if not self.resume:
            fd, self._temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
            self.file = os.fdopen(fd, "wb")
            return self
        self._temp = os.path.join(folder, f".{name}.part")
        self._journal = self._temp + ".json"
        self.file = self._reopen() or self._create()
        return self

    def _reopen(self) -> BinaryIO | None:
        """The partial file of an earlier run, if its journal matches this plan."""
        try:
            with open(self._journal, encoding="utf-8") as f:
                journal = json.load(f)
            fd = os.open(self._temp, os.O_RDWR | os.O_NOFOLLOW)  # never through a planted symlink
        except (OSError, ValueError):
            return None
        info = os.fstat(fd)
        if (not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or journal.get("version") != JOURNAL_VERSION
                or journal.get("plan") != self.plan or info.st_size < journal.get("bytes", -1)):
            os.close(fd)
            return None
        self.parts_done, self.bytes_done = journal["parts"], journal["bytes"]
        self.keys = dict(journal.get("keys", {}))
        os.ftruncate(fd, self.bytes_done)  # bytes written after the last journal entry are redone
        os.lseek(fd, self.bytes_done, os.SEEK_SET)
        self.resumed = True
        return os.fdopen(fd, "wb")

    def _create(self) -> BinaryIO:
        for stale in (self._temp, self._journal):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)  # unlink removes a symlink itself, never its target
        fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        self.parts_done = self.bytes_done = 0
        self.keys = {}
        return os.fdopen(fd, "wb")

    def restart(self) -> None:
        """Drop what an earlier run wrote (its keys changed) and start from the first part."""
        self.file.seek(0)
        self.file.truncate()
        self.parts_done = self.bytes_done = 0
        self.keys = {}
        self.resumed = False

    def part_written(self, size: int, key_identity: str | None, key: bytes | None) -> None:
        """Called once a part's bytes are all written: the journal moves on by one part."""
        self.parts_done += 1
        self.bytes_done += size
        if key_identity and key is not None:
            self.keys.setdefault(key_identity, key_fingerprint(key))
        if self._journal:
            self.file.flush()
            temp = self._journal + ".new"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"version": JOURNAL_VERSION, "plan": self.plan, "parts": self.parts_done,
                           "bytes": self.bytes_done, "keys": self.keys}, f)
            os.replace(temp, self._journal)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.target == "-":
            if exc_type is None:
                self.file.flush()
            return
        self.file.close()
        if exc_type is None:
            os.chmod(self._temp, 0o666 & ~_umask())
            os.replace(self._temp, os.path.abspath(self.target))
            if self._journal:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._journal)
        elif not self.resume:
            with contextlib.suppress(OSError):
                os.unlink(self._temp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class BackgroundWriter:
    """Writes on a thread of its own, so that the disk and the cipher work at the same time.

    At most ``depth`` items wait; a caller that reuses buffers needs ``depth + 2`` of them
    (those waiting, the one being written, the one being filled). ``call`` runs a function on
    the writer thread after everything queued before it is written. An error surfaces at the
    next ``write`` or ``call``, or at ``close``.
    """

    def __init__(self, out: BinaryIO, depth: int):
        self._out = out
        self._queue: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hlsdecrypt-writer", daemon=True)
        self._thread.start()

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self._put(chunk)

    def call(self, fn: Callable[[], None]) -> None:
        self._put(fn)

    def close(self) -> None:
        """Wait until everything queued is done; raise the writer's error, if any."""
        self._queue.put(None)
        self._thread.join()
        if self._error:
            raise self._error

    def _put(self, item: object) -> None:
        if self._error:
            raise self._error
        self._queue.put(item)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    item() if callable(item) else self._out.write(item)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc
