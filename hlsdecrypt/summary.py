"""The machine-readable summary of a decrypt run (``--json-summary``), for the scripts that run it.

One document for one stream or a batch: per stream, what was written (paths and bytes), its
segments, gaps and missing parts, its keys by KeyID or key URI with the source that supplied
each (never a key's value), how it ended and how long it took. Its shape is
``decrypt-summary.schema.json`` beside this module.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any, Callable

from .keys import KeyChain
from .pipeline import DecryptResult
from .report import Target, write_output

SCHEMA = "hlsdecrypt.decrypt-summary/1"
OK, INCOMPLETE, FAILED, SKIPPED = "ok", "incomplete", "failed", "skipped"


class RunSummary:
    """Collects each stream's outcome as the run goes; ``document`` is the summary."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.clock = clock
        self.began = clock()
        self.started = now().isoformat(timespec="seconds").replace("+00:00", "Z")
        self.streams: list[dict[str, Any]] = []

    def decrypted(self, source: str, output: str, result: DecryptResult, keys: KeyChain, seconds: float) -> None:
        used = {p.key.identity for p in result.playlist.parts if p.key and not p.gap}
        self.streams.append({
            "source": source,
            "output": output,
            "status": INCOMPLETE if result.missing else OK,
            "playlist": result.playlist.uri,
            "variant": {"uri": result.variant.uri, "bandwidth": result.variant.bandwidth,
                        "resolution": result.variant.resolution} if result.variant else None,
            "outputs": [{"path": result.output, "bytes": result.bytes_written}],
            "segments": result.segments,
            "written_segments": result.written_segments,
            "gaps": result.gaps,
            "missing": list(result.missing),
            "resumed_after_parts": result.resumed_after,
            "keys": [{"key_id": ref.key_id, "uri": ref.shown_uri, "line": ref.line,
                      "source": keys.supplied_by.get(ref.identity)}
                     for ref in result.playlist.keys if ref.identity in used],
            "seconds": round(seconds, 3),
            "error": None,
        })

    def ended(self, source: str, output: str, *, status: str, exit_code: int, message: str, seconds: float) -> None:
        """A stream that failed, or that a batch skipped (its output exists)."""
        self.streams.append({
            "source": source, "output": output, "status": status, "playlist": None, "variant": None,
            "outputs": [], "segments": None, "written_segments": 0, "gaps": None, "missing": [],
            "resumed_after_parts": None, "keys": [], "seconds": round(seconds, 3),
            "error": {"exit_code": exit_code, "message": message},
        })

    def document(self, exit_code: int) -> dict[str, Any]:
        counts = {status: sum(s["status"] == status for s in self.streams) for status in (OK, INCOMPLETE, FAILED,
                                                                                          SKIPPED)}
        return {
            "schema": SCHEMA,
            "result": "ok" if exit_code == 0 else "interrupted" if exit_code == 130 else "failed",
            "exit_code": exit_code,
            "started": self.started,
            "seconds": round(self.clock() - self.began, 3),
            "streams": self.streams,
            "counts": counts,
            "bytes": sum(o["bytes"] for s in self.streams for o in s["outputs"]),
        }

    def write(self, target: Target, exit_code: int) -> None:
        write_output(target, (json.dumps(self.document(exit_code), indent=2) + "\n").encode("utf-8"))
