"""The reports people and CI systems read: JSON and JUnit for several streams, reports on stdout,
and the HTML page, loaded in a real browser (headless Chromium) and held against the JSON."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from dataclasses import replace
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import FIXTURES

from hlsdecrypt.cli import main
from hlsdecrypt.html_report import CLEAR_COLOUR, FAILED_COLOUR, IV_REUSE_COLOUR, KEY_COLOURS, render_html, write_html
from hlsdecrypt.keys import KeyChain, KeyFile
from hlsdecrypt.report import json_document, json_line, stream_name, write_json, write_junit
from hlsdecrypt.verification import CHECKS, Check, PartOutcome, Report, _flat, verify

SCHEMA = json.loads(resources.files("hlsdecrypt").joinpath("verify-report.schema.json").read_text())
LIVE = FIXTURES / "live_rotation"
HOSTILE_NAME = "a'\"><svg onload=alert(1)>.ts"
HOSTILE_KEY_ID = "</title><script>alert(1)</script>"
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="the HTML report is checked in headless Chromium, "
                                                             "which is not installed: apt-get install chromium")


def run_verify(playlist: Path, keys_file: Path, **options) -> Report:
    keys = KeyChain([KeyFile(str(keys_file))])
    try:
        return verify(str(playlist), keys=keys, **options)
    finally:
        keys.close()


@pytest.fixture
def broken(tmp_path) -> tuple[Path, Path]:
    """The live service's stream, broken three ways and named by a hostile playlist:
    a wrong key for its second KeyID (which is markup), a last segment left clear under
    METHOD=NONE, and a segment file whose name is markup. Returns (playlist, keys file)."""
    folder = tmp_path / "broken"
    shutil.copytree(LIVE, folder)
    second, last = "107327", "107331"
    (folder / f"HD_1080p_1715075942927_3070957834_{second}.ts").rename(folder / HOSTILE_NAME)
    shutil.copy(FIXTURES / "clear/seg5.ts", folder / f"HD_1080p_1715075942927_3070957834_{last}.ts")
    text = (folder / "index.m3u8").read_text()
    text = text.replace(f"HD_1080p_1715075942927_3070957834_{second}.ts?", HOSTILE_NAME.replace(" ", "%20") + "?")
    text = text.replace("key_id=aacb4de7c76f637e64a0118c92", f"key_id={HOSTILE_KEY_ID}")
    text = text.replace(f"#EXTINF:1.000,\nHD_1080p_1715075942927_3070957834_{last}",
                        f"#EXT-X-KEY:METHOD=NONE\n#EXTINF:1.000,\nHD_1080p_1715075942927_3070957834_{last}")
    (folder / "index.m3u8").write_text(text)
    keys = json.loads((LIVE / "keys.json").read_text())
    del keys["aacb4de7c76f637e64a0118c92"]
    keys[HOSTILE_KEY_ID] = "5a" * 16  # not the all-zero IV, which the report rightly shows
    (folder / "keys.json").write_text(json.dumps(keys))
    return folder / "index.m3u8", folder / "keys.json"


def test_the_timeline_records_what_became_of_each_part(broken):
    report = run_verify(*broken, expect_rotation=2)
    document = report.as_json()
    jsonschema.validate(document, SCHEMA)
    assert [(p["status"], p["key_index"]) for p in document["timeline"]] == [
        ("ok", 0), ("ok", 0), ("failed", 1), ("failed", 1), ("ok", 2), ("clear", None)]
    assert document["timeline"][1]["name"] == HOSTILE_NAME  # the file name, without the query
    assert document["timeline"][2]["key"] == f"KeyID {HOSTILE_KEY_ID}"
    failing = next(c["evidence"] for c in document["checks"] if c["name"] == "decryption")
    assert [f"{p['label']}: {p['problem']}" for p in document["timeline"] if p["status"] == "failed"] == failing
    assert [p["iv_reused"] for p in document["timeline"]] == [True] * 4 + [False] * 2  # the zero IV, twice per key
    assert document["expect_rotation"] == 2


def test_no_key_value_reaches_the_json_or_the_page(broken):
    report = run_verify(*broken)
    values = json.loads(broken[1].read_text()).values()
    rendered = json.dumps(report.as_json()) + render_html(report)
    assert not [v for v in values if v in rendered.lower()]


def test_json_to_stdout_is_the_report_alone(capsys, broken):
    playlist, keys = broken
    assert main(["verify", str(playlist), "--keys", str(keys), "--key-source", "none", "--json", "-"]) == 6
    out, err = capsys.readouterr()
    document = json.loads(out)
    jsonschema.validate(document, SCHEMA)
    assert document["result"] == "fail" and "result: FAIL" in err  # the table moves to stderr
    assert not Path("-").exists()


@pytest.mark.parametrize("option, starts", [("--junit", "<?xml"), ("--html", "<!DOCTYPE html>")])
def test_junit_and_html_to_stdout(capsys, option, starts):
    assert main(["verify", str(FIXTURES / "mixed/index.m3u8"), option, "-", "-q"]) == 6
    assert capsys.readouterr().out.startswith(starts)


def test_only_one_report_may_take_stdout(run):
    code, err = run("verify", FIXTURES / "mixed/index.m3u8", "--json", "-", "--html", "-")
    assert code == 2 and "--json and --html" in err


def test_several_streams_make_one_json_document(broken):
    reports = [run_verify(LIVE / "index.m3u8", LIVE / "keys.json"), run_verify(*broken)]
    out = io.StringIO()
    write_json(reports, out)
    document = json.loads(out.getvalue())
    jsonschema.validate(document, SCHEMA)
    assert document["schema"] == "hlsdecrypt.verify-streams/1" and document["result"] == "fail"
    assert [r["result"] for r in document["reports"]] == ["pass", "fail"]
    single = io.BytesIO()
    write_json(reports[:1], single)  # a list is the several-stream shape, whatever its length
    assert json.loads(single.getvalue())["schema"] == "hlsdecrypt.verify-streams/1"
    # indented, but a line per part: the document is read by people too, and long timelines are quick to write
    lines = out.getvalue().splitlines()
    parts = [line for line in lines if line.lstrip().startswith('{"label": ')]
    assert len(parts) == sum(r.parts for r in reports) and len(lines) > len(parts) + 40
    assert all(line.startswith("        {") for line in parts)  # under "reports", each report, its "timeline"
    assert document == json.loads(json.dumps(json_document(reports)))
    long = replace(reports[0], timeline=reports[0].timeline * 500)  # written in pieces of 1,000 parts
    out = io.StringIO()
    write_json(long, out)
    assert json.loads(out.getvalue()) == json.loads(json.dumps(long.as_json()))
    assert out.getvalue().count('\n    {"label": ') == 3000
    # playlist text that encodes to the timeline's stand-in (a KeyID from "%22%00timeline%00") stays text
    odd = replace(reports[0], checks=[Check("key-reuse", "fail", "x", ['KeyID x"\0timeline\0', "\0timeline\0"])])
    by_hand = replace(reports[0], follow={"timeline": "\0timeline\0"})  # Report is public: anyone may build one
    for report in (odd, by_hand):
        out = io.StringIO()
        write_json(report, out)
        assert json.loads(out.getvalue()) == json.loads(json.dumps(report.as_json()))


_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)


@given(st.builds(PartOutcome, _TEXT, st.none() | st.integers(), _TEXT, st.floats() | st.integers(), st.booleans(),
                 st.none() | _TEXT, st.none() | st.integers(0, 5000), st.sampled_from(["ok", "failed", "clear"]),
                 st.booleans(), st.none() | _TEXT))
def test_a_timeline_line_is_what_the_json_encoder_makes_of_the_part(part):
    assert json_line(part) == json.dumps(_flat(part))


def test_junit_has_one_suite_per_stream_with_class_names_that_carry_it(tmp_path, broken):
    good = run_verify(LIVE / "index.m3u8", LIVE / "keys.json")
    copy = tmp_path / "elsewhere/live_rotation"
    shutil.copytree(LIVE, copy)
    reports = [good, run_verify(*broken), run_verify(copy / "index.m3u8", copy / "keys.json")]
    path = tmp_path / "junit.xml"
    write_junit(reports, str(path))
    root = ET.parse(path).getroot()
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["live_rotation", "broken", "live_rotation-2"]
    for suite in suites:
        assert {c.get("classname") for c in suite.iter("testcase")} == {f"hlsdecrypt.verify.{suite.get('name')}"}
        assert len(suite.findall("testcase")) == len(CHECKS)
    assert [s.get("failures") for s in suites] == ["0", "2", "0"]
    assert (root.get("tests"), root.get("failures")) == (str(3 * len(CHECKS)), "2")
    assert {(c.get("name")) for c in suites[1].iter("testcase") if c.find("failure") is not None} == \
        {"coverage", "decryption"}


@pytest.mark.parametrize("source, name", [
    ("recordings/rec1/index.m3u8", "rec1"),
    ("https://cdn.example.com/live/cam2.m3u8?sig=abc.def&expires=1", "cam2"),
    ("https://cdn.example.com/live/show.v2/playlist.m3u8", "show_v2"),
    ("index.m3u8", "index"),
])
def test_stream_names_are_short_and_safe_for_class_names(source, name):
    assert stream_name(source) == name


class _Dom(HTMLParser):
    """Every element of a page with its attributes, and the text inside SVG <title>s."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.titles: list[str] = []
        self._in_title = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.titles.append(data)

    def all(self, tag: str, cls: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag and cls in a.get("class", "").split()]


def test_the_page_is_self_contained_and_escapes_the_playlist(broken):
    page = _Dom(render_html(run_verify(*broken)))
    tags = {tag for tag, _ in page.elements}
    assert not tags & {"script", "img", "link", "iframe", "object", "embed", "svg:script", "foreignobject"}
    assert not [(t, k) for t, attrs in page.elements for k in attrs if k.startswith("on")]
    assert not [a for _, a in page.elements if a.get("src") or a.get("href", "#").split("#")[0]]
    csp = next(a["content"] for t, a in page.elements if a.get("http-equiv") == "Content-Security-Policy")
    assert csp.startswith("default-src 'none'")
    assert any(HOSTILE_NAME in title for title in page.titles)  # shown as text, on hover
    assert any(HOSTILE_KEY_ID in title for title in page.titles)


def expected_picture(report: Report) -> dict[str, Counter]:
    """What the timeline must show, read from the JSON report alone."""
    timeline = report.as_json()["timeline"]
    return {"fill": Counter(CLEAR_COLOUR if p["status"] == "clear" else KEY_COLOURS[p["key_index"]]
                            for p in timeline),
            "stroke": Counter(FAILED_COLOUR for p in timeline if p["status"] == "failed"),
            "dots": Counter(IV_REUSE_COLOUR for p in timeline if p["iv_reused"])}


def shown_picture(dom: _Dom) -> dict[str, Counter]:
    marks = dom.all("rect", "mark")
    return {"fill": Counter(m["fill"] for m in marks),
            "stroke": Counter(m["stroke"] for m in marks if m.get("stroke") == FAILED_COLOUR),
            "dots": Counter(c["fill"] for c in dom.all("circle", "iv-reuse"))}


def chromium(tmp_path: Path, page: Path, *mode: str) -> tuple[str, list[str]]:
    """Load ``page`` in headless Chromium: (its stdout, the console messages it logged)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    profile.mkdir()
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
         "--window-size=1200,900", *mode, page.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


def png_colours(data: bytes) -> tuple[int, int, Counter]:
    """Width, height and the pixel count of each colour (hex) of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, bytearray()
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", data[pos + 8:pos + 21])
        elif kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    assert depth == 8 and colour_type in (2, 6) and interlace == 0
    bpp, raw = 3 if colour_type == 2 else 4, zlib.decompress(bytes(idat))
    stride, previous, counts = width * bpp, bytearray(width * bpp), Counter()
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride) if kind else ():  # undo the row's filter: 1 sub, 2 up, 3 average, 4 Paeth
            left, up = (line[i - bpp] if i >= bpp else 0), previous[i]
            up_left = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                guess = left
            elif kind == 2:
                guess = up
            elif kind == 3:
                guess = (left + up) // 2
            else:
                p = left + up - up_left
                guess = min((abs(p - left), 0, left), (abs(p - up), 1, up), (abs(p - up_left), 2, up_left))[2]
            line[i] = (line[i] + guess) & 255
        counts.update(line[i:i + 3].hex() for i in range(0, stride, bpp))
        previous = line
    return width, height, counts


@needs_chromium
def test_the_browser_reports_console_errors_to_this_harness(tmp_path):
    """The check below means something: a page with an error and a blocked load is caught."""
    page = tmp_path / "bad.html"
    page.write_text(render_html(run_verify(LIVE / "index.m3u8", LIVE / "keys.json")).replace(
        "<footer>", '<img src="http://127.0.0.1:9/x.png"><footer>'))
    _, console = chromium(tmp_path, page, "--dump-dom")
    assert any("Content Security Policy" in line for line in console)


@needs_chromium
@pytest.mark.parametrize("stream", ["good", "broken"])
def test_the_html_report_in_a_browser_shows_what_the_json_says(tmp_path, broken, stream):
    report = run_verify(LIVE / "index.m3u8", LIVE / "keys.json", expect_rotation=2) if stream == "good" else \
        run_verify(*broken, expect_rotation=1)
    page = tmp_path / f"{stream}.html"
    write_html(report, str(page))
    dom_text, console = chromium(tmp_path, page, "--dump-dom")
    assert console == []
    dom = _Dom(dom_text)
    assert not {tag for tag, _ in dom.elements} & {"script", "img"}  # the hostile names stayed text
    assert shown_picture(dom) == expected_picture(report)
    hover = [title.split("\n")[0] for title in dom.titles]
    assert [p.label for p in report.timeline] == [t for t in hover if t.startswith("segment ")]
    rotations = dom.all("rect", "rotation")
    assert len(rotations) == 2  # three keys, two rotations
    assert len(dom.all("g", "too-long")) == (0 if stream == "good" else 2)  # the third key has one segment

    shot = tmp_path / f"{stream}.png"
    _, console = chromium(tmp_path, page, f"--screenshot={shot}")
    assert console == []
    width, height, colours = png_colours(shot.read_bytes())
    assert (width, height) == (1200, 900) and len(colours) > 50  # a drawn page, not a blank one
    used = {colour.lstrip("#") for colour in expected_picture(report)["fill"]}
    unused = {c.lstrip("#") for c in KEY_COLOURS} - used
    assert all(colours[c] > 200 for c in used), {c: colours[c] for c in used}  # at least a mark's worth
    assert not [c for c in unused if colours[c]]
    assert (colours[FAILED_COLOUR.lstrip("#")] > 0) == report.failed
