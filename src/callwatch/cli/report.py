"""``callwatch report [BEFORE] AFTER -o report.html``: one self-contained HTML page."""

from __future__ import annotations

import argparse
import sys

from ..analysis import AnalysisError


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("report", help="write one self-contained HTML page of profile dumps",
                       description="Write one HTML file (no network: inline CSS, JS and SVG) with the "
                                   "per-function table (calls and ms per request; before -> after with "
                                   "ratios, sortable) and an icicle of the call tree, the functions whose "
                                   "calls per request grew in red. One FILE|DIR: a single-profile page. "
                                   "With graphviz's dot installed the call graph is embedded too.")
    p.add_argument("paths", nargs="+", metavar="FILE|DIR",
                   help="AFTER alone, or BEFORE AFTER (dumps or folders of dumps, like diff)")
    p.add_argument("-o", "--output", default="report.html", help="the HTML file (default report.html)")
    p.add_argument("--title", help="the page's title")
    p.add_argument("--no-graphviz", action="store_true", help="leave out the graphviz call graph")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import write

    if len(args.paths) > 2:
        print("callwatch report: give AFTER, or BEFORE AFTER (a folder holds several dumps)", file=sys.stderr)
        return 2
    before = [args.paths[0]] if len(args.paths) == 2 else None
    try:
        out = write(before, [args.paths[-1]], args.output, title=args.title, graphviz=not args.no_graphviz)
    except AnalysisError as e:
        print(f"callwatch report: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"callwatch report: {args.output}: cannot write it ({e.strerror or e})", file=sys.stderr)
        return 2
    print(out)
    return 0
