"""Where a report or a summary goes: a path, ``-`` for stdout, or an open file (binary, or text).

Apart from the reports themselves, so that ``decrypt --json-summary`` writes its summary without
importing the verifier.
"""

from __future__ import annotations

import io
import os
import sys
from contextlib import contextmanager
from typing import BinaryIO, Callable, Iterator, TextIO, Union

from .errors import UsageError

#: Where a report goes: a path, "-" for stdout, or an open binary or text file.
Target = Union[str, "os.PathLike[str]", BinaryIO, TextIO]


def write_output(target: Target, data: bytes) -> None:
    """Write a whole rendered report to a path, ``-`` (stdout) or an open file."""
    write_rendered(target, lambda out: out.write(data.decode("utf-8")))


def write_rendered(target: Target, render: Callable[[TextIO], object]) -> None:
    """Let ``render`` write a report, as UTF-8 text, to a path, ``-`` (stdout) or an open file."""
    if isinstance(target, str) and target == "-":
        sys.stdout.flush()
        if hasattr(sys.stdout, "buffer"):  # UTF-8, whatever the locale's encoding
            with _utf8(sys.stdout.buffer) as out:
                render(out)
        else:
            render(sys.stdout)
    elif isinstance(target, (str, os.PathLike)):
        try:
            with open(target, "w", encoding="utf-8") as f:
                render(f)
        except OSError as exc:
            raise UsageError(f"cannot write the report to {os.fspath(target)}: {exc.strerror}") from None
    elif isinstance(target, io.TextIOBase):
        render(target)
    else:
        with _utf8(target) as out:  # type: ignore[arg-type]  # not text, so binary
            render(out)


@contextmanager
def _utf8(binary: BinaryIO) -> Iterator[TextIO]:
    """A text view of a binary file that is flushed, then let go of without closing the file."""
    out = io.TextIOWrapper(binary, encoding="utf-8", newline="")
    try:
        yield out
    finally:
        out.flush()
        out.detach()
