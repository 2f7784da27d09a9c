"""The machine-readable summary of a decrypt run (``--json-summary``), for the scripts that run it.

One document for one stream or a batch: per stream, what was written (paths and bytes), its
segments, gaps and missing parts, its keys by KeyID or key URI with the source that supplied
each (never a key's value), how it ended and how long it took. Its shape is
``decrypt-summary.schema.json`` beside this module.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from typing import Any, Callable

from .keys import KeyChain
from .pipeline import DecryptResult
from .target import Target, write_output

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
        parts = [result, *getattr(result, "renditions", ())]  # a variant's renditions, where decrypt writes them
        missing = [m for part in parts for m in part.missing]
        self.streams.append({
            "source": source,
            "output": output,
            "status": INCOMPLETE if missing else OK,
            "playlist": result.playlist.uri,
            "variant": {"uri": result.variant.uri, "bandwidth": result.variant.bandwidth,
                        "resolution": result.variant.resolution} if result.variant else None,
            "outputs": _outputs(parts, getattr(result, "remuxed", None)),
            "segments": result.segments,
            "written_segments": result.written_segments,
            "gaps": result.gaps,
            "missing": missing,
            "resumed_after_parts": result.resumed_after,
            "keys": _keys(parts, keys),
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


def _outputs(parts: list[DecryptResult], remuxed: str | None) -> list[dict[str, Any]]:
    """The files the stream left: the clear stream and its renditions (unless a remux consumed them), the remux."""
    found = [{"path": part.output, "bytes": part.bytes_written, "what": getattr(part, "label", "") or "stream"}
             for part in parts if part.output == "-" or os.path.isfile(part.output) or not remuxed]
    if remuxed:
        found.append({"path": remuxed, "bytes": os.path.getsize(remuxed), "what": "remux"})
    return found


def _keys(parts: list[DecryptResult], keys: KeyChain) -> list[dict[str, Any]]:
    """Each distinct key of the parts written or skipped, in order of first use, with who supplied it."""
    found: dict[str, dict[str, Any]] = {}
    for part in parts:
        used = {p.key.identity for p in part.playlist.parts if p.key and not p.gap}
        for ref in part.playlist.keys:
            if ref.identity in used and ref.identity not in found:
                found[ref.identity] = {"key_id": ref.key_id, "uri": ref.shown_uri, "line": ref.line,
                                       "source": keys.supplied_by.get(ref.identity)}
    return list(found.values())
