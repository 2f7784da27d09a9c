"""Where decrypted bytes go: a file that appears under its name only when complete, or stdout."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
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
