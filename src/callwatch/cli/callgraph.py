"""``callwatch callgraph``: a call graph image (gprof2dot + graphviz's dot)."""

from __future__ import annotations

import argparse
import fnmatch
import io
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ..analysis import AnalysisError, load


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("callgraph", help="draw a call graph (svg or png) of profile dumps",
                       description="Draw the call graph of profile dumps with gprof2dot and graphviz. "
                                   "--diff colors each function by how its calls per request changed from "
                                   "OTHER (red: grew, green: fell); --highlight outlines functions.")
    p.add_argument("paths", nargs="+", metavar="FILE|DIR")
    p.add_argument("-o", "--output", required=True, help="out.svg, out.png or out.dot")
    p.add_argument("--diff", metavar="OTHER", help="the baseline dumps (e.g. the 2-player table)")
    p.add_argument("--highlight", action="append", default=[], metavar="PATTERN",
                   help="outline functions whose name matches (glob, or a plain substring); repeatable")
    p.add_argument("--node-threshold", type=float, default=0.5, help="hide nodes under this %% (default 0.5)")
    p.set_defaults(func=run)


_NODE = re.compile(r'^(\t\d+ \[)color="([^"]+)", fontcolor="([^"]+)", (fontsize="[^"]+", )label="([^"]*)"(.*)$')


def run(args: argparse.Namespace) -> int:
    try:
        import gprof2dot
    except ImportError:
        print("callwatch callgraph: needs gprof2dot. Fix: pip install 'callwatch[profile]'", file=sys.stderr)
        return 2
    out = Path(args.output)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in ("svg", "png", "dot"):
        print(f"callwatch callgraph: {out}: give a .svg, .png or .dot file", file=sys.stderr)
        return 2
    dot = shutil.which("dot")
    if fmt != "dot" and dot is None:
        print("callwatch callgraph: graphviz's dot is not installed. Fix: apt-get install graphviz "
              "(or write a .dot file)", file=sys.stderr)
        return 2
    try:
        main = load(args.paths)
        base = load([args.diff]) if args.diff else None
    except AnalysisError as e:
        print(f"callwatch callgraph: {e}", file=sys.stderr)
        return 2

    profile = gprof2dot.PstatsParser(*[str(f) for f in main.files]).parse()
    profile.prune(args.node_threshold / 100.0, args.node_threshold / 500.0, None, False)
    calls_main = {f.name: (f.called or 0) / main.requests for f in profile.functions.values()}
    calls_base: dict[str, float] = {}
    if base is not None:
        bprof = gprof2dot.PstatsParser(*[str(f) for f in base.files]).parse()
        calls_base = {f.name: (f.called or 0) / base.requests for f in bprof.functions.values()}
    text = io.StringIO()
    gprof2dot.DotWriter(text).graph(profile, gprof2dot.themes["color"])
    lines = [_restyle(line, calls_main, calls_base if base is not None else None, args.highlight)
             for line in text.getvalue().splitlines()]
    source = "\n".join(lines) + "\n"
    if fmt == "dot":
        out.write_text(source)
        return 0
    r = subprocess.run([str(dot), f"-T{fmt}", "-o", str(out)], input=source.encode(), capture_output=True,
                       timeout=120)
    if r.returncode != 0:
        print(f"callwatch callgraph: dot failed: {r.stderr.decode(errors='replace').strip()}", file=sys.stderr)
        return 2
    return 0


def _restyle(line: str, calls: dict[str, float], base: dict[str, float] | None, highlight: list[str]) -> str:
    m = _NODE.match(line)
    if m is None:
        return line
    head, color, fontcolor, fontsize, lab, rest = m.groups()
    name = lab.split("\\n", 1)[0]
    extra = ""
    if base is not None:
        now, before = calls.get(name, 0.0), base.get(name, 0.0)
        ratio = math.inf if before == 0 and now > 0 else (now / before if before else 1.0)
        if ratio >= 1.2:
            color, fontcolor = "#d62728", "#ffffff"
            lab += "\\n" + ("new" if math.isinf(ratio) else f"x{ratio:.2f}") + f" calls/req ({before:.2f} -> {now:.2f})"
        elif ratio <= 1 / 1.2:
            color, fontcolor = "#2ca02c", "#ffffff"
            lab += f"\\nx{ratio:.2f} calls/req"
        else:
            color, fontcolor = "#bbbbbb", "#000000"
    if any(fnmatch.fnmatchcase(name, h) or h in name for h in highlight):
        extra = ', penwidth="4", peripheries="2"'
        if base is None:
            color, fontcolor = "#ff7f0e", "#000000"
    return f'{head}color="{color}", fontcolor="{fontcolor}", {fontsize}label="{lab}"{extra}{rest}'
