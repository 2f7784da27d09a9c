"""The verify report as one self-contained HTML page: the checks with their evidence, and the stream drawn.

The page loads nothing (a Content-Security-Policy forbids it, and it runs no script): it must
open from a CI artifact store or a mail attachment as it is. Everything that comes from a
playlist (URIs, KeyIDs, messages quoting them) is hostile input and is escaped.

The timeline has one mark per part, filled with its key's colour (clear parts grey); a failed
part gets a red frame and cross, an IV reused under the same key a dot beneath, a key rotation a
bar before its first segment, and each run of segments under one key a bracket that turns red
when the run is longer than ``--expect-rotation``. Hovering a mark names the segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Callable, Sequence

from . import __version__
from .report import Target, report_names, write_output
from .verification import CLEAR, FAIL, FAILED, PartOutcome, Report

#: Key colours, by a key's order of first use; consecutive keys never share one. No red, amber
#: or grey: those mean failed, IV reuse and clear.
KEY_COLOURS = ("#4e79a7", "#59a14f", "#b07aa1", "#76b7b2", "#9c755f", "#1b3a5c", "#bcbd22", "#7f5fc9",
               "#17becf", "#e377c2")
CLEAR_COLOUR = "#d5d9de"
FAILED_COLOUR = "#d62728"
IV_REUSE_COLOUR = "#e8a200"
LEGEND_KEYS = 12  # the legend names this many keys, then counts the rest

# Geometry of the timeline, in SVG units (pixels at 100 %).
MAX_COLUMNS = 60
WIDTH = 960
GUTTER = 72  # left column: the first sequence number of each row
TOP, MARK_HEIGHT, BELOW = 18, 32, 30
ROW_HEIGHT = TOP + MARK_HEIGHT + BELOW


def key_colour(index: int | None) -> str:
    return CLEAR_COLOUR if index is None else KEY_COLOURS[index % len(KEY_COLOURS)]


@dataclass(frozen=True)
class Run:
    """Consecutive media segments under one key: the spacing of key rotations."""

    key: str
    key_index: int
    first: int  # positions in the timeline
    last: int
    segments: int
    first_sequence: int
    last_sequence: int


def key_runs(timeline: Sequence[PartOutcome]) -> list[Run]:
    """Runs as verify's key-rotation check counts them: a new key or a gap in the sequence ends one."""
    runs: list[Run] = []
    for n, part in enumerate(timeline):
        if part.sequence is None or part.key_index is None:
            continue
        last = runs[-1] if runs else None
        if last and last.key_index == part.key_index and last.last_sequence == part.sequence - 1:
            runs[-1] = Run(last.key, last.key_index, last.first, n, last.segments + 1, last.first_sequence,
                           part.sequence)
        else:
            runs.append(Run(part.key or "", part.key_index, n, n, 1, part.sequence, part.sequence))
    return runs


def render_html(reports: Report | Sequence[Report]) -> str:
    listed = [reports] if isinstance(reports, Report) else list(reports)
    names = report_names(listed)
    failed = sum(r.failed for r in listed)
    title = f"{names[0]}: {'FAIL' if failed else 'PASS'}" if len(listed) == 1 else \
        f"{len(listed)} streams, {failed} failing"
    body = [f"<header><h1>hlsdecrypt verify</h1><p>{escape(title)}</p></header>"]
    if len(listed) > 1:
        body.append(_overview(listed, names))
    body += [_stream(n, report, name) for n, (report, name) in enumerate(zip(listed, names))]
    body.append(f"<footer>hlsdecrypt {escape(__version__)} · this page loads nothing and runs no script</footer>")
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>hlsdecrypt verify: {escape(title)}</title>", f"<style>{_CSS}</style></head><body>",
        *body, "</body></html>", ""])


def write_html(reports: Report | Sequence[Report], target: Target) -> None:
    write_output(target, render_html(reports).encode("utf-8"))


def _badge(status: str) -> str:
    return f'<span class="badge {escape(status)}">{escape(status.upper())}</span>'


def _overview(reports: list[Report], names: list[str]) -> str:
    rows = "".join(
        f'<tr><td>{_badge(FAIL if r.failed else "pass")}</td><td><a href="#stream-{n}">{escape(name)}</a></td>'
        f"<td>{r.segments}</td><td>{r.keys}</td>"
        f"<td>{escape(', '.join(c.name for c in r.checks if c.status == FAIL) or '—')}</td></tr>"
        for n, (r, name) in enumerate(zip(reports, names)))
    return ('<table class="overview"><thead><tr><th>result</th><th>stream</th><th>segments</th><th>keys</th>'
            f"<th>failing checks</th></tr></thead><tbody>{rows}</tbody></table>")


def _stream(n: int, report: Report, name: str) -> str:
    variant = f" · variant {escape(report.variant)}" if report.variant else ""
    rotation = f" · a new key expected at least every {_count(report.expect_rotation, 'segment')}" \
        if report.expect_rotation else ""
    meta = (f'<p class="meta"><code>{escape(report.playlist)}</code>{variant}<br>{report.segments} segments, '
            f"{report.parts} parts, {report.keys} keys{rotation}</p>")
    return "\n".join([
        f'<section class="stream" id="stream-{n}">',
        f"<h2>{_badge(FAIL if report.failed else 'pass')} {escape(name)}</h2>", meta,
        _timeline(report) if report.timeline else "",
        _checks(report), "</section>"])


def _checks(report: Report) -> str:
    rows = []
    for check in report.checks:
        evidence = ""
        if check.evidence:
            opened = " open" if check.status in (FAIL, "warn") else ""
            items = "".join(f"<li>{escape(e)}</li>" for e in check.evidence)
            evidence = f"<details{opened}><summary>evidence ({len(check.evidence)})</summary><ul>{items}</ul></details>"
        rows.append(f'<tr class="{escape(check.status)}"><td>{_badge(check.status)}</td><th>{escape(check.name)}</th>'
                    f"<td>{escape(check.summary)}{evidence}</td></tr>")
    return f'<table class="checks"><tbody>{"".join(rows)}</tbody></table>'


def _timeline(report: Report) -> str:
    parts = report.timeline
    columns = min(len(parts), MAX_COLUMNS)
    cell = max(14, min(48, (WIDTH - GUTTER) // columns))
    gap = 2 if cell < 24 else 4
    rows = -(-len(parts) // columns)
    width, height = GUTTER + columns * cell, rows * ROW_HEIGHT

    def place(n: int) -> tuple[int, int]:
        """Top-left corner of the mark of part n."""
        return GUTTER + (n % columns) * cell, (n // columns) * ROW_HEIGHT + TOP

    svg = [(f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="timeline: one mark per part, coloured by key">')]
    for row in range(rows):
        first = parts[row * columns]
        label = "init" if first.sequence is None else str(first.sequence)
        svg.append(f'<text class="row-label" x="{GUTTER - 8}" y="{row * ROW_HEIGHT + TOP + MARK_HEIGHT // 2 + 4}" '
                   f'text-anchor="end">{escape(label)}</text>')
    runs = key_runs(parts)
    rotations = {run.first for before, run in zip(runs, runs[1:]) if run.key_index != before.key_index}
    labelled = rotations | {runs[0].first} if runs else rotations
    for n, part in enumerate(parts):
        x, y = place(n)
        svg.append(_mark(part, x, y, cell - gap))
        if part.discontinuity:
            svg.append(f'<line class="discontinuity" x1="{x - gap / 2}" y1="{y - 4}" x2="{x - gap / 2}" '
                       f'y2="{y + MARK_HEIGHT + 4}"><title>EXT-X-DISCONTINUITY</title></line>')
        if n in rotations:
            svg.append(f'<rect class="rotation" x="{x - gap / 2 - 1.5}" y="{y - 8}" width="3" '
                       f'height="{MARK_HEIGHT + 14}" fill="#222"><title>key rotation: {escape(part.key or "")} '
                       f'from {escape(part.label)}</title></rect>')
        if n in labelled:
            assert part.key_index is not None  # runs are of parts under a key
            svg.append(f'<text class="key-label" x="{x + 1}" y="{y - 3}">K{part.key_index + 1}</text>')
    for run in runs:
        svg += _bracket(run, report.expect_rotation, columns, place, cell - gap)
    svg.append("</svg>")
    hint = '<p class="hint">one mark per part, in playlist order; hover a mark to name it</p>'
    return (f'<figure class="timeline">{hint}{"".join(svg)}<figcaption>{_legend(report, runs)}</figcaption></figure>'
            + _runs_table(runs, report.expect_rotation))


def _mark(part: PartOutcome, x: int, y: int, w: int) -> str:
    fill = key_colour(None if part.status == CLEAR else part.key_index)
    lines = [part.label, f"{part.name} · {part.duration:.3f} s",
             "clear: not under METHOD=AES-128" if part.key_index is None else f"K{part.key_index + 1}: {part.key}"]
    if part.status == FAILED:
        lines.append(f"FAILED: {part.problem}")
    if part.iv_reused:
        lines.append("its IV is reused under the same key")
    shape = [f'<g class="part {escape(part.status)}"><title>{escape(chr(10).join(lines))}</title>']
    if part.status == FAILED:
        shape.append(f'<rect class="mark" x="{x + 1.5}" y="{y + 1.5}" width="{w - 3}" height="{MARK_HEIGHT - 3}" '
                     f'rx="2" fill="{fill}" stroke="{FAILED_COLOUR}" stroke-width="3"/>'
                     f'<path d="M{x + 4} {y + 4}L{x + w - 4} {y + MARK_HEIGHT - 4}M{x + w - 4} {y + 4}L{x + 4} '
                     f'{y + MARK_HEIGHT - 4}" stroke="{FAILED_COLOUR}" stroke-width="2"/>')
    else:
        stroke = ' stroke="#8a939c" stroke-dasharray="3 2"' if part.status == CLEAR else ""
        shape.append(f'<rect class="mark" x="{x}" y="{y}" width="{w}" height="{MARK_HEIGHT}" rx="2" '
                     f'fill="{fill}"{stroke}/>')
    if part.sequence is None:
        shape.append(f'<text class="init" x="{x + w / 2}" y="{y + MARK_HEIGHT / 2 + 4}" text-anchor="middle">i</text>')
    if part.iv_reused:
        shape.append(f'<circle class="iv-reuse" cx="{x + w / 2}" cy="{y + MARK_HEIGHT + 5}" r="2.5" '
                     f'fill="{IV_REUSE_COLOUR}"/>')
    shape.append("</g>")
    return "".join(shape)


def _bracket(run: Run, expect: int | None, columns: int, place: Callable[[int], tuple[int, int]], w: int) -> list[str]:
    """A bracket under the run's marks, one piece per row it spans; red when the run is too long."""
    too_long = expect is not None and run.segments > expect
    colour = FAILED_COLOUR if too_long else "#555"
    text = f"{run.segments} > {expect}" if too_long else str(run.segments)
    about = (f"K{run.key_index + 1} {run.key}: segments {run.first_sequence}–{run.last_sequence}, {run.segments} "
             f"under one key" + (f" (expected at most {expect})" if expect else ""))
    pieces = [f'<g class="run{" too-long" if too_long else ""}"><title>{escape(about)}</title>']
    start = run.first
    while start <= run.last:
        end = min(run.last, (start // columns + 1) * columns - 1)
        (x1, y), (x2, _) = place(start), place(end)
        x2 += w
        y += MARK_HEIGHT + 11
        pieces.append(f'<path d="M{x1} {y - 4}V{y}H{x2}V{y - 4}" fill="none" stroke="{colour}" '
                      f'stroke-width="{2 if too_long else 1.2}"/>')
        if start == run.first and x2 - x1 >= 7 * len(text):
            pieces.append(f'<text x="{(x1 + x2) / 2}" y="{y + 12}" text-anchor="middle" fill="{colour}">'
                          f"{escape(text)}</text>")
        start = end + 1
    pieces.append("</g>")
    return pieces


def _legend(report: Report, runs: list[Run]) -> str:
    used: dict[int, tuple[str, int]] = {}
    for part in report.timeline:
        if part.key_index is not None and part.status != CLEAR:
            key, count = used.get(part.key_index, (part.key or "", 0))
            used[part.key_index] = (key, count + 1)
    items = [_swatch(f"K{i + 1} {key}", _count(count, "part"), style=f"background:{key_colour(i)}")
             for i, (key, count) in sorted(used.items())[:LEGEND_KEYS]]
    if len(used) > LEGEND_KEYS:
        items.append(f"<li>… and {len(used) - LEGEND_KEYS} more keys (colours repeat every {len(KEY_COLOURS)})</li>")
    counts = {status: sum(p.status == status for p in report.timeline) for status in (CLEAR, FAILED)}
    if counts[CLEAR]:
        items.append(_swatch("clear (not encrypted)", _count(counts[CLEAR], "part"),
                             style=f"background:{CLEAR_COLOUR}; border:1px dashed #8a939c"))
    if counts[FAILED]:
        items.append(_swatch("failed", _count(counts[FAILED], "part"), style=f"border:3px solid {FAILED_COLOUR}"))
    reused = sum(p.iv_reused for p in report.timeline)
    if reused:
        items.append(_swatch("IV reused under the same key", _count(reused, "part"), kind="dot"))
    if len({r.key_index for r in runs}) > 1:
        items.append(_swatch("key rotation", kind="bar"))
    if report.expect_rotation and any(r.segments > report.expect_rotation for r in runs):
        items.append(_swatch(f"more than {_count(report.expect_rotation, 'segment')} under one key", kind="long"))
    return f'<ul class="legend">{"".join(items)}</ul>'


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _swatch(what: str, count: str = "", *, style: str = "", kind: str = "") -> str:
    """A legend entry: its swatch is styled by our own constants, its text may come from a playlist."""
    count = f' <span class="count">{escape(count)}</span>' if count else ""
    return (f'<li><span class="swatch {kind}" style="{style}"></span><span class="what">{escape(what)}</span>'
            f"{count}</li>")


def _runs_table(runs: list[Run], expect: int | None) -> str:
    if not runs:
        return ""
    longest = max(r.segments for r in runs)
    verdict = f"; expected at most {expect}" if expect else ""
    rows = "".join(
        f'<tr class="{"fail" if expect and r.segments > expect else ""}"><td>K{r.key_index + 1}</td>'
        f"<td>{escape(r.key)}</td><td>{r.first_sequence}–{r.last_sequence}</td><td>{r.segments}</td></tr>"
        for r in runs)
    return (f'<details class="runs"><summary>key rotation: {len(runs)} runs, the longest {longest} segments'
            f"{escape(verdict)}</summary><table><thead><tr><th></th><th>key</th><th>segments</th><th>count</th>"
            f"</tr></thead><tbody>{rows}</tbody></table></details>")


_CSS = """
:root { --fail: #d62728; --pass: #2e7d32; --warn: #b26a00; --skip: #6b7280; --ink: #1f2328; --line: #d0d7de; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1100px; padding: 24px 28px 40px; color: var(--ink); background: #fff;
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header { display: flex; align-items: baseline; gap: 16px; border-bottom: 1px solid var(--line); margin-bottom: 8px; }
h1 { font-size: 20px; margin: 0 0 8px; }
header p { margin: 0; color: var(--skip); }
h2 { font-size: 17px; margin: 24px 0 4px; display: flex; align-items: center; gap: 10px; }
.meta { margin: 0 0 12px; color: #444; }
code { font: 12px ui-monospace, "DejaVu Sans Mono", monospace; overflow-wrap: anywhere; }
.badge { display: inline-block; min-width: 46px; padding: 1px 7px; border-radius: 10px; color: #fff;
         font: 600 11px/18px system-ui, sans-serif; text-align: center; letter-spacing: .04em; }
.badge.pass { background: var(--pass); } .badge.fail { background: var(--fail); }
.badge.warn { background: var(--warn); } .badge.skip { background: var(--skip); }
figure.timeline { margin: 8px 0 4px; padding: 12px; border: 1px solid var(--line); border-radius: 8px;
                  overflow-x: auto; background: #fafbfc; }
svg.timeline { display: block; font: 11px system-ui, sans-serif; }
svg.timeline .row-label { fill: #6b7280; font-variant-numeric: tabular-nums; }
svg.timeline .key-label { font-weight: 600; fill: #222; }
.hint { margin: 0 0 6px; color: var(--skip); font-size: 12px; }
svg.timeline .init { fill: #fff; font-weight: 700; }
svg.timeline .discontinuity { stroke: #6b7280; stroke-width: 1.5; stroke-dasharray: 2 2; }
svg.timeline g.part:hover .mark { opacity: .75; }
.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 10px 0 0; padding: 0; }
.legend li { display: flex; align-items: center; gap: 6px; max-width: 100%; }
.legend .what { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; max-width: 360px; }
.legend .count { color: var(--skip); }
.swatch { display: inline-block; width: 14px; height: 14px; border-radius: 2px; flex: none; }
.swatch.dot { width: 6px; height: 6px; border-radius: 50%; margin: 0 4px; background: #e8a200; }
.swatch.bar { width: 3px; height: 16px; margin: 0 5px; background: #222; border-radius: 0; }
.swatch.long { height: 3px; background: var(--fail); border-radius: 0; }
details.runs { margin: 4px 0 12px; color: #444; }
details.runs table { border-collapse: collapse; margin-top: 6px; }
details.runs td, details.runs th { padding: 2px 10px; border-bottom: 1px solid var(--line); text-align: left; }
details.runs tr.fail td { color: var(--fail); font-weight: 600; }
table.checks, table.overview { width: 100%; border-collapse: collapse; margin-top: 8px; }
table.checks td, table.checks th, table.overview td, table.overview th {
  padding: 7px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
table.checks th { white-space: nowrap; font-weight: 600; }
table.checks td:first-child { width: 64px; }
table.checks tr.fail { background: #fdf0f0; } table.checks tr.warn { background: #fff8e6; }
details ul { margin: 4px 0 0; padding-left: 18px; font: 12px ui-monospace, "DejaVu Sans Mono", monospace; }
details summary { cursor: pointer; color: #444; }
footer { margin-top: 32px; color: var(--skip); font-size: 12px; }
"""
