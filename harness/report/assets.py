"""The report's stylesheet, its small inline script (sorting, filtering, figures) and plotly.js, inline or from a CDN."""

from __future__ import annotations

import base64
import gzip
import json
from functools import lru_cache

import plotly.io as pio

CDN = "https://cdn.plot.ly/plotly-{version}.min.js"

STYLE = """
:root { color-scheme: light dark; --fg: #1f2328; --muted: #656d76; --bg: #ffffff; --panel: #f6f8fa; --line: #d0d7de; --good: #1a7f37; --bad: #cf222e; --accent: #0969da; --ref: #eef6ff; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --muted: #9198a1; --bg: #0d1117; --panel: #161b22; --line: #30363d; --good: #3fb950; --bad: #f85149; --accent: #4493f8; --ref: #13233a; } }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 0 auto; max-width: 1800px; color: var(--fg); background: var(--bg); padding: 1rem 1.2rem 3rem; line-height: 1.45; }
h1 { margin: .4rem 0 .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid var(--line); padding-bottom: .3rem; } h3 { margin: 1.4rem 0 .4rem; }
a { color: var(--accent); }
.meta, .note { color: var(--muted); font-size: .92rem; overflow-wrap: anywhere; }
.lead { font-size: 1.05rem; }
.table-block { margin: .5rem 0 1.3rem; }
.table-scroll { overflow-x: auto; max-width: 100%; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: separate; border-spacing: 0; font-size: .82rem; width: max-content; min-width: 100%; }
caption { text-align: left; padding: .4rem .6rem; color: var(--muted); }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .45rem; vertical-align: top; white-space: nowrap; background: var(--bg); }
th { background: var(--panel); position: sticky; top: 0; z-index: 1; }
th button { all: unset; cursor: pointer; font-weight: 600; }
th[aria-sort=ascending] button::after { content: " \\25B2"; } th[aria-sort=descending] button::after { content: " \\25BC"; }
.wrap { white-space: normal; min-width: 8rem; max-width: 22rem; }
.num { text-align: right; font-variant-numeric: tabular-nums; } .text { text-align: left; }
.sticky { position: sticky; left: 0; z-index: 2; border-right: 1px solid var(--line); }
th.sticky { z-index: 3; }
tr.reference td { background: var(--ref); font-weight: 600; }
tr:target td { outline: 2px solid var(--accent); outline-offset: -2px; }
.ci { color: var(--muted); font-weight: normal; }
.good { color: var(--good); } .bad { color: var(--bad); } .muted { color: var(--muted); }
.flag { display: inline-block; font-size: .75rem; padding: 0 .35rem; border-radius: 3px; border: 1px solid var(--bad); color: var(--bad); margin-left: .3rem; }
details.reason { display: inline; } details.reason summary { cursor: pointer; }
details.reason[open] > div { white-space: normal; max-width: 30rem; color: var(--muted); }
.table-filter { margin: 0 0 .35rem; padding: .25rem .5rem; font: inherit; font-size: .85rem; border: 1px solid var(--line); border-radius: 4px; background: var(--bg); color: var(--fg); }
pre { background: var(--panel); padding: 1rem; overflow-x: auto; font-size: .85rem; }
.figure { position: relative; margin: 1rem 0; min-height: 2rem; background: #fff; border-radius: 6px; overflow: hidden; }
.figure-missing { color: var(--bad); padding: 1rem; background: var(--bg); }
.section-error { border: 2px solid var(--bad); color: var(--bad); padding: .8rem 1rem; margin: .6rem 0 1.2rem; white-space: pre-wrap; }
.answer-none { color: var(--muted); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; font-size: .9rem; } dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
nav.toc { font-size: .9rem; display: flex; flex-wrap: wrap; gap: .2rem 1rem; margin: .6rem 0; } nav.toc a { white-space: nowrap; }
"""

SCRIPT = r"""
(function () {
  function sortValue(cell) {
    var raw = cell.getAttribute('data-sort');
    if (raw === null || raw === '') return null;
    var number = Number(raw);
    return isNaN(number) ? raw.toLowerCase() : number;
  }
  function sortTable(table, index, header) {
    var body = table.tBodies[0];
    var ascending = header.getAttribute('aria-sort') !== 'ascending';
    table.querySelectorAll('th').forEach(function (th) { th.setAttribute('aria-sort', 'none'); });
    header.setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = sortValue(a.cells[index]), y = sortValue(b.cells[index]);
      if (x === null && y === null) return 0;
      if (x === null) return 1;
      if (y === null) return -1;
      var order = x < y ? -1 : x > y ? 1 : 0;
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    table.querySelectorAll('thead th').forEach(function (header, index) {
      header.querySelector('button').addEventListener('click', function () { sortTable(table, index, header); });
    });
  });
  document.querySelectorAll('.table-filter').forEach(function (input) {
    var table = input.parentNode.querySelector('table');
    input.addEventListener('input', function () {
      var needle = input.value.toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        row.hidden = needle !== '' && row.textContent.toLowerCase().indexOf(needle) < 0;
      });
    });
  });

  function showMissing(reason) {
    document.querySelectorAll('.figure-missing').forEach(function (note) {
      note.textContent = 'This figure could not be drawn: ' + reason + ' The tables and report.csv hold every number.';
    });
  }
  function loadInlinePlotly() {
    var packed = document.getElementById('plotly-gzip');
    if (window.Plotly || !packed) return Promise.resolve();
    if (typeof DecompressionStream === 'undefined') return Promise.reject(new Error('this browser cannot unpack the inlined plotly.js (no DecompressionStream).'));
    var text = atob(packed.textContent.trim());
    var bytes = new Uint8Array(text.length);
    for (var i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
    return new Response(stream).text().then(function (code) {
      var script = document.createElement('script');
      script.textContent = code;
      document.head.appendChild(script);
    });
  }
  function drawFigures() {
    if (!window.Plotly) { showMissing('plotly.js did not load (a report written with --cdn needs the network; write it without --cdn for a self-contained file).'); return; }
    document.querySelectorAll('script.figure-data').forEach(function (data) {
      var target = document.getElementById(data.getAttribute('data-target'));
      var figure = JSON.parse(data.textContent);
      target.innerHTML = '';
      window.Plotly.newPlot(target, figure.data, figure.layout, {displaylogo: false, responsive: true});
    });
  }
  loadInlinePlotly().then(drawFigures, function (error) { showMissing(String(error.message || error)); });
})();
"""


@lru_cache(maxsize=1)
def plotly_gzip_base64() -> str:
    """plotly.js, gzip-compressed and base64-encoded: a third of its size, unpacked in the browser."""
    from plotly.offline import get_plotlyjs

    return base64.b64encode(gzip.compress(get_plotlyjs().encode("utf-8"), 9, mtime=0)).decode("ascii")


def plotly_js_version() -> str:
    """The version of plotly.js that the installed plotly ships."""
    from plotly.offline import get_plotlyjs_version

    return get_plotlyjs_version()


def plotly_script(cdn: bool) -> str:
    """The ``<script>`` that provides plotly.js: a CDN link, or the library inlined (compressed)."""
    if cdn:
        return f"<script src='{CDN.format(version=plotly_js_version())}' charset='utf-8'></script>"
    return f"<script type='application/octet-stream' id='plotly-gzip'>{plotly_gzip_base64()}</script>"


def figure_html(figure, div_id: str) -> str:
    """A figure's placeholder (with the message shown where it cannot be drawn) and its JSON, drawn by :data:`SCRIPT`."""
    data = pio.to_json(figure, validate=False, pretty=False).replace("</", "<\\/")
    return (
        f"<div class='figure' id='{div_id}'><p class='figure-missing'>This figure is drawn by JavaScript (plotly.js); "
        f"it shows here when scripts run.</p></div><script type='application/json' class='figure-data' data-target='{div_id}'>{data}</script>"
    )


def json_script(element_id: str, value) -> str:
    """A JSON value embedded for scripts and tests."""
    text = json.dumps(value).replace("</", "<\\/")
    return f"<script type='application/json' id='{element_id}'>{text}</script>"
