"""How verify reports are shown: a table on the terminal, JSON, and JUnit XML for CI systems.

The writers take one report or a list of them (several streams in one CI job), and write to a
path, to ``-`` for stdout, or to an open file (binary, or text): a ``target``. The HTML page is
``html_report``.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Sequence, TextIO

from .errors import plural
from .target import Target, write_output, write_rendered
from .uris import stream_name
from .verification import FAIL, PASS, SKIP, WARN, PartOutcome, Report

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

STREAMS_SCHEMA = "hlsdecrypt.verify-streams/1"


def write_table(report: Report, out: TextIO, *, failures_only: bool = False) -> None:
    """The report as a table for a terminal; ``failures_only`` keeps the failing checks (``-q``)."""
    variant = f" ({report.label})" if report.label else f" (variant {report.variant})" if report.variant else ""
    out.write(f"{report.playlist}{variant}: {plural(report.segments, 'segment')}, {plural(report.parts, 'part')}, "
              f"{plural(report.keys, 'key')}\n")
    width = max(len(c.name) for c in report.checks)
    for check in report.checks:
        if failures_only and check.status != FAIL:
            continue
        out.write(f"{check.name:<{width}}  {check.status.upper():<4}  {check.summary}\n")
        if check.status in (FAIL, WARN):
            for item in check.evidence:
                out.write(f"{'':<{width}}        {item}\n")
    out.write(f"result: {'FAIL' if report.failed else 'PASS'}\n")


def json_document(reports: Report | Sequence[Report], *, timeline: object = None) -> dict:
    """One report as its own object; a list (even of one) as ``{"schema", "result", "reports"}``.

    The shape follows what the caller verified, not how many streams there happened to be, so
    a script reading ``--batch`` output never meets the single shape by chance. ``timeline``:
    see ``Report.as_json``.
    """
    if isinstance(reports, Report):
        return reports.as_json(timeline=timeline)
    return {"schema": STREAMS_SCHEMA, "result": FAIL if any(r.failed for r in reports) else PASS,
            "reports": [r.as_json(timeline=timeline) for r in reports]}


def write_json(reports: Report | Sequence[Report], target: Target) -> None:
    if not isinstance(reports, Report):
        reports = list(reports)  # read twice: for the document, and for the timelines written in it
    listed = [reports] if isinstance(reports, Report) else reports
    write_rendered(target, lambda out: _write_document(reports, [r.timeline for r in listed], out))


#: Stands for a timeline while the rest of a document is indented. It is found by its key as well:
#: inside a JSON string every quote is escaped, so no playlist text can encode to ``"timeline": "…"``.
_HOLE = "\0timeline\0"
_SLOT = '"timeline": ' + json.dumps(_HOLE)


def _write_document(reports: Report | Sequence[Report], timelines: list[tuple[PartOutcome, ...]],
                    out: TextIO) -> None:
    """The document indented, except that each part of a timeline is one line: the indenting
    encoder is pure Python (~1 s for a 100,000-part timeline), a line per part made here is quicker
    still than the C one (``json_line``), and a line per part reads and greps better. Streamed:
    that is tens of MB."""
    pieces = json.dumps(json_document(reports, timeline=_HOLE), indent=2).split(_SLOT)
    if len(pieces) != len(timelines) + 1:  # a report built by hand whose "follow" writes the slot itself
        json.dump(json_document(reports), out, indent=2)
        out.write("\n")
        return
    for piece, timeline in zip(pieces, timelines):
        out.write(piece)
        indent = " " * (len(piece) - piece.rfind("\n") - 1)
        out.write('"timeline": ')
        if not timeline:
            out.write("[]")
            continue
        start = f"\n{indent}  "
        out.write("[")
        for at in range(0, len(timeline), 1000):  # in pieces: the whole at once would be one more copy of it
            out.write(("," if at else "") + start + f",{start}".join(map(json_line, timeline[at:at + 1000])))
        out.write(f"\n{indent}]")
    out.write(pieces[-1] + "\n")


def json_line(part: PartOutcome) -> str:
    """``json.dumps`` of the part's fields, to the byte: they are plain values of known types, so
    this spares the encoder's look at each (a third of the time, over a long recording)."""
    p = part
    return (f'{{"label": {_text(p.label)}, "sequence": {_number(p.sequence)}, "name": {_text(p.name)}, '
            f'"duration": {_number(p.duration)}, "discontinuity": {_BOOLEAN[p.discontinuity]}, '
            f'"key": {_text(p.key)}, "key_index": {_number(p.key_index)}, "status": {_text(p.status)}, '
            f'"iv_reused": {_BOOLEAN[p.iv_reused]}, "problem": {_text(p.problem)}}}')


_BOOLEAN = {False: "false", True: "true"}
_quoted = json.encoder.encode_basestring_ascii  # what json.dumps quotes with (its C version)


def _text(value: str | None) -> str:
    return "null" if value is None else _quoted(value)


def _number(value: float | None) -> str:
    """As the encoder writes a number: ``int.__repr__`` or ``float.__repr__``, and NaN and the
    infinities by their JavaScript names."""
    if value is None:
        return "null"
    if isinstance(value, float):
        return float.__repr__(value) if math.isfinite(value) else json.dumps(value)
    return int.__repr__(value)


def write_junit(reports: Report | Sequence[Report], target: Target) -> None:
    """One ``<testsuite>`` per stream, named after it, and one test case per check whose class
    name carries the stream (``hlsdecrypt.verify.<stream>``), so that streams do not collide.
    Failures are ``<failure>``, skips ``<skipped>``, passes and warnings say so in ``<system-out>``."""
    import xml.etree.ElementTree as ET  # here: a verify that writes no JUnit does not pay for it

    listed = [reports] if isinstance(reports, Report) else list(reports)
    root = ET.Element("testsuites", name="hlsdecrypt verify")
    for report, name in zip(listed, report_names(listed)):
        root.append(_suite(report, name))
    for count in ("tests", "failures", "errors", "skipped"):
        root.set(count, str(sum(int(suite.get(count) or 0) for suite in root)))
    write_output(target, ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")


def _suite(report: Report, name: str) -> ET.Element:
    import xml.etree.ElementTree as ET

    suite = ET.Element("testsuite", name=name, tests=str(len(report.checks)),
                       failures=str(sum(c.status == FAIL for c in report.checks)), errors="0",
                       skipped=str(sum(c.status == SKIP for c in report.checks)))
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="source", value=report.source)
    ET.SubElement(properties, "property", name="playlist", value=report.playlist)
    for check in report.checks:
        case = ET.SubElement(suite, "testcase", classname=f"hlsdecrypt.verify.{name}", name=check.name)
        detail = "\n".join([check.summary, *check.evidence])
        if check.status == FAIL:
            ET.SubElement(case, "failure", message=check.summary).text = detail
        elif check.status == SKIP:
            ET.SubElement(case, "skipped", message=check.summary)
        else:
            ET.SubElement(case, "system-out").text = f"{check.status}: {detail}"
    return suite


def report_names(reports: Sequence[Report]) -> list[str]:
    """A short name for each report: its stream's, and which of a master's media playlists it checked
    (``rec1-audio_English``), made unique by ``-2``, ``-3``… in order."""
    names: list[str] = []
    for report in reports:
        label = re.sub(r"[^A-Za-z0-9_-]+", "_", report.label.split(" (")[0]).strip("_")
        base = name = stream_name(report.source) + (f"-{label}" if label else "")
        n = 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names
