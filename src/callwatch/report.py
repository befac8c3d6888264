"""One self-contained HTML file to look at profile dumps: ``callwatch report``.

The page holds a per-function table (calls and cumulative time per request, before and
after, with ratios; its headers sort it) and an icicle of the call tree, drawn as inline
SVG from the pstats caller edges the way snakeviz does: a function's children share its
width in proportion to the time each spent under it.  Functions whose calls per request
grew carry the CSS class ``grew``, in the table and in the picture.  Nothing is fetched:
the CSS, the few lines of JS and the SVG are all in the file, and every function name is
HTML-escaped.  With graphviz's ``dot`` on PATH the gprof2dot call graph of
:mod:`callwatch.callgraph` is embedded too; without it the icicle stands alone.

Usage::

    from callwatch import report
    report.write(["dumps-2-players/"], ["dumps-7-players/"], "report.html")
    report.write(None, ["dumps/deal/"], "one.html")   # a single profile
"""

from __future__ import annotations

import html
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .analysis import DiffRow, FuncKey, Profiles, diff, is_wrapper, label, load
from .errors import AnalysisError

__all__ = ["AnalysisError", "GREW_RATIO", "build", "grew", "write"]

#: A function "grew" when its calls per request rose by at least this factor (or appeared).
GREW_RATIO = 1.2
WIDTH, ROW = 1200.0, 22.0
MAX_DEPTH, MIN_WIDTH = 40, 0.5  # px: narrower nodes are left out, as snakeviz does
MAX_ROWS = 300


def grew(row: DiffRow) -> bool:
    """Calls per request up by x``GREW_RATIO`` or more (a function that was absent counts)."""
    return row.calls_b > 0 and row.calls_ratio >= GREW_RATIO


@dataclass
class Node:
    key: FuncKey | None  # None: the root that joins the profile's top-level functions
    seconds: float  # the time this node stands for (its share of the parent)
    children: list["Node"] = field(default_factory=list)


def call_tree(profiles: Profiles) -> Node:
    """The call tree from the caller edges: each child is scaled by the share of its
    caller's cumulative time that the edge accounts for; a function already on the path
    is not entered again (recursion), and nodes too narrow to see are dropped."""
    stats: dict[FuncKey, Any] = profiles.stats.stats  # type: ignore[attr-defined]
    children: dict[FuncKey, list[tuple[FuncKey, float]]] = {}
    roots: list[FuncKey] = []
    for callee, (_cc, _nc, _tt, ct, callers) in stats.items():
        if is_wrapper(callee):
            continue
        real = {c: v for c, v in callers.items() if c in stats}
        if not real:
            roots.append(callee)
        for caller, edge in real.items():
            edge_ct = edge[3] if isinstance(edge, tuple) else ct
            children.setdefault(caller, []).append((callee, float(edge_ct)))
    total = sum(float(stats[r][3]) for r in roots)
    root = Node(None, total)
    scale = WIDTH / total if total > 0 else 0.0
    for r in sorted(roots, key=lambda k: -stats[k][3]):
        _grow(root, r, float(stats[r][3]), stats, children, (r,), scale)
    return root


def _grow(parent: Node, key: FuncKey, seconds: float, stats: dict[FuncKey, Any],
          children: dict[FuncKey, list[tuple[FuncKey, float]]], path: tuple[FuncKey, ...], scale: float) -> None:
    if seconds * scale < MIN_WIDTH or len(path) > MAX_DEPTH:
        return
    node = Node(key, seconds)
    parent.children.append(node)
    own_ct = float(stats[key][3])
    for child, edge_ct in sorted(children.get(key, []), key=lambda c: -c[1]):
        if child in path or own_ct <= 0:
            continue
        share = seconds * min(1.0, edge_ct / own_ct)
        _grow(node, child, share, stats, children, path + (child,), scale)


def icicle_svg(root: Node, grown: set[FuncKey], requests: int) -> str:
    """The tree as an SVG icicle: the root on top, a row per depth, widths by time."""
    rects: list[str] = []
    scale = WIDTH / root.seconds if root.seconds > 0 else 0.0
    depth = _place(root, 0.0, 0, scale, grown, requests, rects)
    height = (depth + 1) * ROW
    return (f'<svg class="icicle" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH:.0f} {height:.0f}" '
            f'width="100%" role="img" aria-label="call tree">{"".join(rects)}</svg>')


def _place(node: Node, x: float, depth: int, scale: float, grown: set[FuncKey], requests: int,
           out: list[str]) -> int:
    w = node.seconds * scale
    name = "all" if node.key is None else label(node.key)
    short = name if node.key is None else _short(node.key)
    cls = "node grew" if node.key in grown else "node"
    ms = node.seconds * 1000 / max(requests, 1)
    text = html.escape(short if len(short) * 7 < w - 6 else short[: max(0, int((w - 6) / 7) - 1)] + "…")
    out.append(f'<g class="{cls}" data-function="{html.escape(name)}"><title>{html.escape(name)}: '
               f'{ms:.3f} ms per request here</title><rect x="{x:.2f}" y="{depth * ROW:.0f}" '
               f'width="{max(w - 0.5, 0.1):.2f}" height="{ROW - 1:.0f}"/>'
               + (f'<text x="{x + 3:.2f}" y="{depth * ROW + 15:.0f}">{text}</text>' if w > 20 else "") + "</g>")
    deepest, cx = depth, x
    for child in node.children:
        deepest = max(deepest, _place(child, cx, depth + 1, scale, grown, requests, out))
        cx += child.seconds * scale
    return deepest


def _short(key: FuncKey) -> str:
    """``db.py:32(Database.get_player)``: the file's last part, for the labels."""
    return label(key).rsplit("/", 1)[-1]


def _num(v: float, digits: int) -> str:
    return "new" if math.isinf(v) else f"{v:.{digits}f}"


def table_html(rows: Sequence[DiffRow], single: bool) -> str:
    """The growth table; each cell's ``data-v`` is the number the headers sort by."""
    heads = (["function", "calls/req", "ms/req"] if single else
             ["function", "calls/req before", "calls/req after", "calls ratio",
              "ms/req before", "ms/req after", "ms ratio"])
    out = ['<table id="growth"><thead><tr>']
    out += [f'<th data-col="{i}" title="click to sort">{h}</th>' for i, h in enumerate(heads)]
    out.append("</tr></thead><tbody>")
    for r in rows[:MAX_ROWS]:
        cells = ([(r.calls_b, 2), (r.cum_ms_b, 3)] if single else
                 [(r.calls_a, 2), (r.calls_b, 2), (r.calls_ratio, 2), (r.cum_ms_a, 3), (r.cum_ms_b, 3),
                  (r.cum_ratio, 2)])
        cls = ' class="grew"' if not single and grew(r) else ""
        name = html.escape(label(r.key))
        tds = "".join(f'<td data-v="{1e300 if math.isinf(v) else v:.6g}">{_num(v, d)}</td>' for v, d in cells)
        out.append(f'<tr{cls}><td class="fn" data-v="{name}">{name}</td>{tds}</tr>')
    out.append("</tbody></table>")
    if len(rows) > MAX_ROWS:
        out.append(f"<p>{len(rows) - MAX_ROWS} more functions left out.</p>")
    return "".join(out)


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:13px}
th,td{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}
th{cursor:pointer;background:#f0f0f0;user-select:none}th.sorted{background:#dde6f5}
td.fn{text-align:left;font-family:monospace}
tr.grew td{background:#fde0dd}tr.grew td.fn{color:#b2182b;font-weight:bold}
svg.icicle rect{fill:#9ecae1;stroke:#fff;stroke-width:.5}
svg.icicle g.grew rect{fill:#d62728}svg.icicle g.grew text{fill:#fff}
svg.icicle text{font:11px monospace;fill:#111;pointer-events:none}
svg.icicle g:hover rect{opacity:.75}
.legend span{display:inline-block;width:1em;height:1em;vertical-align:middle;margin:0 .3em 0 1em}
"""

_JS = """
document.querySelectorAll('#growth th').forEach(function (th) {
  th.addEventListener('click', function () {
    var col = +th.dataset.col, body = document.querySelector('#growth tbody');
    var down = th.dataset.dir !== 'down';
    document.querySelectorAll('#growth th').forEach(function (h) { h.className = ''; delete h.dataset.dir; });
    th.className = 'sorted'; th.dataset.dir = down ? 'down' : 'up';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v, c;
      c = col === 0 ? x.localeCompare(y) : (+x) - (+y);
      return down ? -c : c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def build(before: Profiles | None, after: Profiles, *, title: str = "callwatch report",
          names: tuple[str, str] = ("before", "after"), graph_svg: str | None = None) -> str:
    """The report as one HTML page; ``before`` None gives the single-profile page."""
    single = before is None
    rows = diff(after, after) if before is None else diff(before, after)
    if single:
        rows.sort(key=lambda r: (-r.cum_ms_b, label(r.key)))
    grown = set() if single else {r.key for r in rows if grew(r)}
    tree = icicle_svg(call_tree(after), grown, after.requests)
    if single:
        head = f"<p>{after.requests} profiled request(s) from {_files(after)}; per request.</p>"
    else:
        assert before is not None
        head = (f"<p><b>{html.escape(names[0])}</b>: {before.requests} request(s) from {_files(before)}; "
                f"<b>{html.escape(names[1])}</b>: {after.requests} request(s) from {_files(after)}. "
                f"Per request. {len(grown)} function(s) grew (calls per request x{GREW_RATIO} or more), "
                'shown <span class="grew-mark">in red</span>.</p>')
    legend = ('<p class="legend">Width: cumulative time under the caller'
              + ("" if single else f' in "{html.escape(names[1])}"; <span style="background:#d62728"></span>'
                 'calls per request grew') + "</p>")
    graph = "" if graph_svg is None else f"<h2>Call graph (graphviz)</h2><div class=\"graph\">{graph_svg}</div>"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{head}<h2>Call tree</h2>{legend}{tree}{graph}"
            f"<h2>Functions</h2>{table_html(rows, single)}<script>{_JS}</script></body></html>\n")


def _files(p: Profiles) -> str:
    parents = sorted({str(f.parent) for f in p.files})
    return html.escape(", ".join(parents[:3]) + (" …" if len(parents) > 3 else ""))


def _graphviz(before: Sequence[str | Path] | None, after: Sequence[str | Path]) -> str | None:
    """gprof2dot's graph as SVG text when dot and gprof2dot are there, else None."""
    if shutil.which("dot") is None:
        return None
    from .callgraph import CallgraphError, draw

    if len(before or ()) > 1:
        return None  # draw() takes one baseline path
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "graph.svg"
        try:
            draw(list(after), out, diff=before[0] if before else None)
        except CallgraphError:
            return None
        text = out.read_text()
    return text[text.find("<svg"):] if "<svg" in text else None


def write(before: Iterable[str | Path] | None, after: Iterable[str | Path], output: str | Path, *,
          title: str | None = None, names: tuple[str, str] | None = None, graphviz: bool = True) -> Path:
    """Load the dumps (files or folders, as ``callwatch diff`` does), write the page to
    ``output`` and return its path.  Bad input raises :class:`AnalysisError` naming the file."""
    b_paths = list(before) if before is not None else None
    a_paths = list(after)
    a = load(a_paths)
    b = load(b_paths) if b_paths is not None else None
    if names is None:
        names = (_name(b_paths) if b_paths else "before", _name(a_paths))
    if title is None:
        title = f"callwatch report: {names[0]} → {names[1]}" if b is not None else f"callwatch report: {names[1]}"
    graph = _graphviz(b_paths, a_paths) if graphviz else None
    out = Path(output)
    out.write_text(build(b, a, title=title, names=names, graph_svg=graph), encoding="utf-8")
    return out


def _name(paths: Sequence[str | Path]) -> str:
    return ", ".join(Path(p).name for p in paths)
