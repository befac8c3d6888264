"""``callwatch callgraph``: a call graph image (gprof2dot + graphviz's dot)."""

from __future__ import annotations

import argparse
import sys

from ..analysis import AnalysisError
from ..callgraph import CallgraphError, draw


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


def run(args: argparse.Namespace) -> int:
    try:
        draw(args.paths, args.output, diff=args.diff, highlight=args.highlight, node_threshold=args.node_threshold)
    except (CallgraphError, AnalysisError) as e:
        print(f"callwatch callgraph: {e}", file=sys.stderr)
        return 2
    return 0
