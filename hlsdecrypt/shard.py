"""``--shard I/N``: the I-th of N shares of a batch, so that any runner can start N machines on one list.

Entry n of the list (counted from 1, in the order given; in a ``--batch`` file, comments and
blank lines do not count) belongs to share ((n - 1) mod N) + 1. Every machine reads the same
list, so the shares are stable and together hold every entry exactly once. They are dealt
round-robin rather than cut in blocks, so that a list sorted by date or size spreads evenly.

I counts from 1, as people count machines. A runner that counts from 0 (a Kubernetes Indexed
Job's ``JOB_COMPLETION_INDEX``) gives ``$((JOB_COMPLETION_INDEX + 1))/N``; ``0/N`` is refused
with that hint rather than guessed at, since ``1/N`` would then mean two different shares.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence, TypeVar

from .errors import UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int  # from 1
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise UsageError(f"--shard {text}: want I/N, e.g. 2/4 for the second of four shares")
        index, count = int(match[1]), int(match[2])
        if count < 1:
            raise UsageError(f"--shard {text}: N is at least 1")
        if not 1 <= index <= count:
            hint = (f" (from a 0-based index such as JOB_COMPLETION_INDEX, give $((JOB_COMPLETION_INDEX + 1))/{count})"
                    if index == 0 else "")
            raise UsageError(f"--shard {text}: I counts from 1 to {count}{hint}")
        return cls(index, count)

    def take(self, entries: Sequence[T]) -> list[T]:
        """This share's entries, in their order."""
        return [entry for n, entry in enumerate(entries) if n % self.count == self.index - 1]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
