"""The report in a real browser (headless Chromium, network off): figures draw, tables sort on click, nothing is cut off, answers name a technique."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

from benchharness.report.html import build_report
from benchharness.report.frame import load_run
from tests.conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "run-small"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (make test installs Debian's chromium when it can)")

# Runs in the page once its figures are drawn: sorts the first results table by speedup twice,
# measures overflow, and leaves what it saw in <body data-probe>.
PROBE = r"""
<script>
(function () {
  function values(table, index) {
    return Array.prototype.map.call(table.tBodies[0].rows, function (row) { return row.cells[index].getAttribute('data-sort'); });
  }
  function probe() {
    var table = document.querySelector('#results table.sortable');
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var index = headers.findIndex(function (th) { return th.textContent.indexOf('speedup') === 0; });
    headers[index].querySelector('button').click();
    var ascending = values(table, index);
    headers[index].querySelector('button').click();
    var descending = values(table, index);
    var scrolls = Array.prototype.map.call(document.querySelectorAll('.table-scroll'), function (box) {
      return {scroll: box.scrollWidth, client: box.clientWidth, overflow: getComputedStyle(box).overflowX};
    });
    var wide = [];
    document.querySelectorAll('body *').forEach(function (element) {
      if ((element.getBoundingClientRect().right > window.innerWidth + 1 || element.scrollWidth > window.innerWidth) && !element.closest('.table-scroll') && wide.length < 10) wide.push(element.tagName + '.' + element.getAttribute('class') + '@' + Math.round(element.getBoundingClientRect().right) + (element.closest('.figure') ? ' in ' + element.closest('.figure').id : ''));
    });
    var result = JSON.stringify({wide: wide,
      ascending: ascending, descending: descending, sortState: headers[index].getAttribute('aria-sort'),
      pageWidth: document.documentElement.scrollWidth, viewport: window.innerWidth, scrolls: scrolls,
      drawn: document.querySelectorAll('.figure .main-svg').length, figures: document.querySelectorAll('.figure').length,
      missing: document.querySelectorAll('.figure-missing').length
    });
    document.body.setAttribute('data-probe', result);
    if (window.parent !== window) window.parent.postMessage(result, '*');
  }
  var tries = 0;
  (function wait() {
    var figures = document.querySelectorAll('.figure').length;
    if ((document.querySelectorAll('.figure .main-svg').length >= figures && figures > 0) || tries++ > 100) { probe(); return; }
    setTimeout(wait, 100);
  })();
})();
</script>
"""


# Headless Chromium's window is at least 500 px wide: a phone's 390 px is an iframe of that width,
# whose probe posts what it saw to this page.
PHONE = """<!DOCTYPE html><html><body style='margin:0'><iframe src='{src}' style='width:{width}px;height:900px;border:0'></iframe>
<script>window.addEventListener('message', function (event) {{ document.body.setAttribute('data-probe', event.data); }});</script></body></html>"""


def offline_chromium(page: Path, width: int, profile: str) -> subprocess.CompletedProcess:
    """The page's DOM after its scripts ran, in headless Chromium with every network request failing (narrow widths in an iframe)."""
    if width < 500:
        frame = page.with_name(f"phone-{width}.html")
        frame.write_text(PHONE.format(src=page.name, width=width))
        page = frame
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9", "--enable-logging=stderr", "--v=0", f"--window-size={max(width, 500)},900", "--virtual-time-budget=20000",
        "--dump-dom", page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def probe_result(dom: str) -> dict:
    """What the probe script left in the DOM."""
    match = re.search(r'data-probe="([^"]*)"', dom)
    assert match, "the probe did not run: " + dom[-500:]
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


class AnswerRows(HTMLParser):
    """The rows of the answers table: each row's cells as text, and the links in its 'ship' cell."""

    def __init__(self):
        super().__init__()
        self.in_answers = self.in_body = False
        self.rows: list[list[str]] = []
        self.links: list[list[str]] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "section":
            self.in_answers = attributes.get("id") == "answers"
        if self.in_answers and tag == "tbody":
            self.in_body = True
        if self.in_body and tag == "tr":
            self.rows.append([])
            self.links.append([])
        if self.in_body and tag == "td":
            self.rows[-1].append("")
        if self.in_body and tag == "a" and len(self.rows[-1]) == 3:
            self.links[-1].append(attributes.get("href", ""))

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False

    def handle_data(self, data):
        if self.in_body and self.rows and self.rows[-1]:
            self.rows[-1][-1] += data


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """The fixture run's report with the probe, as Chromium left it at 1400 px and at 390 px."""
    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed")
    folder = tmp_path_factory.mktemp("browser")
    page = folder / "report.html"
    page.write_text(build_report(load_run(FIXTURE)).replace("</body>", PROBE + "</body>"))
    profile = tempfile.mkdtemp()
    return {width: offline_chromium(page, width, profile) for width in (1400, 390)}


@needs_chromium
def test_figures_draw_offline_and_the_console_is_clean(rendered):
    """With the network off, the inlined plotly.js unpacks and every figure draws data points; no script error."""
    result = rendered[1400]
    found = probe_result(result.stdout)
    assert found["figures"] >= 3 and found["drawn"] >= found["figures"], found
    for div in result.stdout.split("<div class=\"figure\" id=\"figure-")[1:]:
        assert "main-svg" in div and re.search(r'class="point"|class="js-line"', div), "a figure has no data points"
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]
    assert console == []


@needs_chromium
def test_tables_sort_on_click(rendered):
    """Clicking the speedup header sorts the rows by their numeric values, ascending then descending, empty values last."""
    found = probe_result(rendered[1400].stdout)
    numbers = [float(value) for value in found["ascending"] if value]
    assert len(numbers) >= 3 and numbers == sorted(numbers)
    assert found["ascending"][-1] == "" or all(found["ascending"])
    descending = [float(value) for value in found["descending"] if value]
    assert descending == sorted(numbers, reverse=True) and found["sortState"] == "descending"


@needs_chromium
def test_nothing_is_cut_off_at_1400_px_and_tables_scroll_on_a_phone(rendered):
    """At 1400 px every table fits its box and the page does not scroll sideways; at 390 px tables scroll inside their box."""
    wide = probe_result(rendered[1400].stdout)
    assert wide["pageWidth"] <= wide["viewport"], wide
    assert all(box["scroll"] <= box["client"] for box in wide["scrolls"]), wide["scrolls"]
    narrow = probe_result(rendered[390].stdout)
    assert narrow["pageWidth"] <= narrow["viewport"], f"the page itself scrolls sideways on a phone: {narrow}"
    assert any(box["scroll"] > box["client"] for box in narrow["scrolls"]) and all(box["overflow"] == "auto" for box in narrow["scrolls"])
    assert narrow["viewport"] == 390
    assert "name=\"viewport\"" in rendered[1400].stdout


@needs_chromium
def test_answers_name_a_technique_for_every_group(rendered):
    """Every model, device and batch size with a reference has an answer row whose 'ship' cell links to a technique's row."""
    parser = AnswerRows()
    parser.feed(rendered[1400].stdout)
    run = load_run(FIXTURE)
    groups = {
        (record["cell"]["model"], record["cell"]["device"], entry["batch_size"])
        for record in run.records if record["status"] == "ok" and record["cell"]["technique"] == run.reference for entry in record["latency"]
    }
    assert len(parser.rows) == len(groups) > 0
    techniques = {record["cell"]["technique"] for record in run.records}
    for cells, links in zip(parser.rows, parser.links):
        assert any(name in cells[2] for name in techniques), cells
        assert links and all(link.startswith("#cell-") for link in links)
        assert f'id="{links[0][1:]}"' in rendered[1400].stdout, "the answer links to a row that does not exist"


def technique_colours(dom: str) -> dict[str, set[str]]:
    """Every colour each technique's traces use, read from the figures' JSON in the page."""
    colours: dict[str, set[str]] = {}
    for text in re.findall(r'<script type="application/json" class="figure-data"[^>]*>(.*?)</script>', dom, re.S):
        for trace in json.loads(text.replace("<\\/", "</"))["data"]:
            technique = trace.get("legendgroup")
            if not technique:
                continue
            for colour in (trace.get("marker", {}).get("color"), trace.get("line", {}).get("color")):
                if isinstance(colour, str):
                    colours.setdefault(technique, set()).add(colour.lower())
    return colours


@needs_chromium
def test_each_technique_has_one_colour_in_every_figure(rendered):
    """A technique's traces share one colour across all figures, and no two techniques share one."""
    colours = technique_colours(rendered[1400].stdout)
    assert len(colours) >= 3
    assert all(len(found) == 1 for found in colours.values()), colours
    assert len({next(iter(found)) for found in colours.values()}) == len(colours)


@needs_chromium
def test_a_cdn_report_offline_says_why_its_figures_are_missing(tmp_path):
    """A report that links plotly.js from the CDN, opened offline, shows a visible message in place of each figure."""
    page = tmp_path / "cdn.html"
    page.write_text(build_report(load_run(FIXTURE), cdn=True))
    dom = offline_chromium(page, 1400, tempfile.mkdtemp()).stdout
    messages = re.findall(r'<p class="figure-missing">(.*?)</p>', dom)
    assert len(messages) >= 3 and all("plotly.js did not load" in message for message in messages)
    assert "main-svg" not in dom
