"""``callwatch diff A B``: which functions' calls and time per request grew from A to B."""

from __future__ import annotations

import argparse
import json
import math
import sys

from ..analysis import AnalysisError, DiffRow, label, load


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("diff", help="compare two sets of profile dumps per request",
                       description="Compare profile dumps A and B (files or directories; each dump counts as one "
                                   "request): the functions whose calls per request and cumulative time per "
                                   "request grew most, with ratios.")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("-n", "--top", type=int, default=20, help="rows to show (default 20)")
    p.add_argument("--all", action="store_true", help="also functions that did not grow")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _r(x: float) -> str:
    return "new" if math.isinf(x) else f"x{x:.2f}"


def run(args: argparse.Namespace) -> int:
    try:
        a, b = load([args.a]), load([args.b])
    except AnalysisError as e:
        print(f"callwatch diff: {e}", file=sys.stderr)
        return 2
    from ..analysis import diff

    rows = [r for r in diff(a, b) if args.all or r.calls_b > r.calls_a * 1.0001 or r.cum_ms_b > r.cum_ms_a * 1.2]
    rows = rows[: args.top]
    if args.json:
        print(json.dumps([_json(r) for r in rows], indent=2))
        return 0
    print(f"A: {args.a} ({a.requests} request(s))   B: {args.b} ({b.requests} request(s)); per request:")
    print(f"{'calls A':>9} {'calls B':>9} {'ratio':>7}   {'cum ms A':>9} {'cum ms B':>9} {'ratio':>7}   function")
    for r in rows:
        print(f"{r.calls_a:>9.2f} {r.calls_b:>9.2f} {_r(r.calls_ratio):>7}   "
              f"{r.cum_ms_a:>9.3f} {r.cum_ms_b:>9.3f} {_r(r.cum_ratio):>7}   {label(r.key)}")
    if not rows:
        print("nothing grew")
    return 0


def _json(r: DiffRow) -> dict[str, object]:
    return {"function": label(r.key), "calls_per_request": [r.calls_a, r.calls_b],
            "calls_ratio": None if math.isinf(r.calls_ratio) else r.calls_ratio,
            "cum_ms_per_request": [r.cum_ms_a, r.cum_ms_b],
            "cum_ratio": None if math.isinf(r.cum_ratio) else r.cum_ratio}
