"""Where decrypted bytes go: a file that appears under its name only when complete, or stdout."""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import tempfile
import threading
from typing import BinaryIO, Iterator


@contextlib.contextmanager
def open_output(path: str) -> Iterator[BinaryIO]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    The temporary file is created exclusively (never through a planted symlink), and removed
    when the body raises, so a failed or interrupted run leaves nothing under the final name.
    ``-`` is stdout, written as it comes.
    """
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = os.path.abspath(path)
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".part",
                                dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class BackgroundWriter:
    """Writes on a thread of its own, so that the disk and the cipher work at the same time.

    At most ``depth`` chunks wait; a caller that reuses buffers needs ``depth + 2`` of them
    (those waiting, the one being written, the one being filled). A write error surfaces at
    the next ``write`` or at ``close``.
    """

    def __init__(self, out: BinaryIO, depth: int):
        self._out = out
        self._queue: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="hlsdecrypt-writer", daemon=True)
        self._thread.start()

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._error:
            raise self._error
        self._queue.put(chunk)

    def close(self) -> None:
        """Wait until everything queued is written; raise the writer's error, if any."""
        self._queue.put(None)
        self._thread.join()
        if self._error:
            raise self._error

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._out.write(chunk)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc
