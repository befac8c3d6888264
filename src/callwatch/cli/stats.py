"""``callwatch stats``: the classic pstats script, grown up (merges many dumps)."""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Any

from ..analysis import AnalysisError, label, load

SORT_KEYS = ("calls", "cumulative", "cumtime", "file", "filename", "line", "module", "name", "ncalls",
             "nfl", "pcalls", "stdname", "time", "tottime")


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("stats", help="print merged profile dumps, sorted and cut like pstats",
                       description="Merge pstats dumps (files or directories) and print them as pstats does.")
    p.add_argument("paths", nargs="+", metavar="FILE|DIR")
    p.add_argument("-s", "--sort", action="append", choices=SORT_KEYS, metavar="KEY",
                   help=f"sort key, repeatable, as pstats names them ({', '.join(SORT_KEYS)}); "
                        "default: cumulative")
    p.add_argument("-p", "--restrict", metavar="FRACTION|COUNT",
                   help="keep a fraction of the rows (0.1) or a number of them (20)")
    p.add_argument("-d", "--dirs", action="store_true", help="keep directories in file names")
    p.add_argument("--callers", metavar="PATTERN", help="who calls the functions matching PATTERN (a regex)")
    p.add_argument("--callees", metavar="PATTERN", help="what the functions matching PATTERN call")
    p.add_argument("--json", action="store_true", help="the rows as JSON")
    p.set_defaults(func=run)


def restriction(text: str | None) -> list[Any]:
    if text is None:
        return []
    try:
        value = float(text)
    except ValueError:
        raise AnalysisError(f"-p {text}: give a fraction (0.1) or a count (20)") from None
    if value < 0:
        raise AnalysisError(f"-p {text}: must not be negative")
    return [value if value < 1 or not value.is_integer() else int(value)]


def run(args: argparse.Namespace) -> int:
    try:
        profiles = load(args.paths)
        restrict = restriction(args.restrict)
    except AnalysisError as e:
        print(f"callwatch stats: {e}", file=sys.stderr)
        return 2
    st = profiles.stats
    if not args.dirs:
        st.strip_dirs()
    st.sort_stats(*(args.sort or ["cumulative"]))
    out = io.StringIO()
    st.stream = out  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps(rows(st, restrict, args), indent=2))
        return 0
    if args.callers:
        st.print_callers(args.callers, *restrict)
    elif args.callees:
        st.print_callees(args.callees, *restrict)
    else:
        st.print_stats(*restrict)
    sys.stdout.write(out.getvalue())
    return 0


def rows(st: Any, restrict: list[Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    sel = [args.callers or args.callees] if (args.callers or args.callees) else []
    _, funcs = st.get_print_list(sel + restrict)
    out = []
    for key in funcs or []:
        cc, nc, tt, ct, callers = st.stats[key]
        row: dict[str, Any] = {"function": label(key), "ncalls": nc, "pcalls": cc, "tottime": tt, "cumtime": ct,
                               "tottime_percall": tt / nc if nc else 0.0, "cumtime_percall": ct / cc if cc else 0.0}
        if args.callers:
            row["callers"] = {label(k): {"ncalls": v[1], "pcalls": v[0], "tottime": v[2], "cumtime": v[3]}
                              for k, v in callers.items()}
        if args.callees:
            row["callees"] = {label(k): {"ncalls": v[4][key][1], "tottime": v[4][key][2], "cumtime": v[4][key][3]}
                              for k, v in st.stats.items() if key in v[4]}
        out.append(row)
    return out
