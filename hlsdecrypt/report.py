"""How a verify report is shown: a table on the terminal, JSON, and JUnit XML for CI systems."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import TextIO

from .verify import FAIL, SKIP, WARN, Report


def write_table(report: Report, out: TextIO) -> None:
    variant = f" (variant {report.variant})" if report.variant else ""
    out.write(f"{report.playlist}{variant}: {report.segments} segments, {report.parts} parts, {report.keys} keys\n")
    width = max(len(c.name) for c in report.checks)
    for check in report.checks:
        out.write(f"{check.name:<{width}}  {check.status.upper():<4}  {check.summary}\n")
        if check.status in (FAIL, WARN):
            for item in check.evidence:
                out.write(f"{'':<{width}}        {item}\n")
    out.write(f"result: {'FAIL' if report.failed else 'PASS'}\n")


def write_json(report: Report, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report.as_json(), f, indent=2)
        f.write("\n")


def write_junit(report: Report, path: str) -> None:
    """One test case per check: failures as <failure>, skips as <skipped>, warnings in <system-out>."""
    suite = ET.Element("testsuite", name="hlsdecrypt verify", tests=str(len(report.checks)),
                       failures=str(sum(c.status == FAIL for c in report.checks)), errors="0",
                       skipped=str(sum(c.status == SKIP for c in report.checks)))
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="playlist", value=report.playlist)
    for check in report.checks:
        case = ET.SubElement(suite, "testcase", classname="hlsdecrypt.verify", name=check.name)
        detail = "\n".join([check.summary, *check.evidence])
        if check.status == FAIL:
            ET.SubElement(case, "failure", message=check.summary).text = detail
        elif check.status == SKIP:
            ET.SubElement(case, "skipped", message=check.summary)
        else:
            ET.SubElement(case, "system-out").text = f"{check.status}: {detail}"
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
