"""``callwatch explain``: why a handler's response time changed between two periods, from
the series in graphite-web."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..config import ConfigError, load
from ..errors import GraphiteError


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("explain", help="explain a handler's response-time change between two periods",
                       description="Read a handler's series from graphite-web for two periods and rank what "
                                   "accounts for the change of its mean response time: watched functions and "
                                   "groups, the mix of a dimension's values, profiled functions; in ms per "
                                   "request and %% of the change, with what is left unexplained.")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--graphite-web", required=True, metavar="URL", help="e.g. http://127.0.0.1:8080")
    p.add_argument("--handler", required=True, help="a handler name, or 'all' to rank the handlers")
    p.add_argument("--before", required=True, metavar="START..END",
                   help="HH:MM[:SS] (today, UTC), YYYY-MM-DDTHH:MM, unix seconds, -2h (ago) or now")
    p.add_argument("--after", required=True, metavar="START..END")
    p.add_argument("-n", "--top", type=int, default=5, help="handlers shown with --handler all (default 5)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help="for all of it (default 30)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def _fail(msg: str) -> int:
    print(f"callwatch explain: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from .. import explain as ex
    from .._explain_graphite import Reader

    try:
        cfg = load(args.config)
    except ConfigError as e:
        return _fail(f"--config {args.config}: not a valid config\n{e}")
    now = time.time()
    ranges = {}
    for opt in ("before", "after"):
        try:
            ranges[opt] = ex.parse_range(getattr(args, opt), now)
        except ValueError as e:
            return _fail(f"--{opt} {e}. Fix: e.g. --{opt} 13:00..14:00")
    deadline = time.monotonic() + args.timeout
    readers = {k: Reader(cfg, args.graphite_web, s, e, deadline) for k, (s, e) in ranges.items()}
    try:
        found = sorted(set(readers["before"].handlers()) & set(readers["after"].handlers()))
        names = found if args.handler == "all" else [args.handler]
        if args.handler != "all" and args.handler not in found:
            return _fail(f"--handler {args.handler}: no requests of it in both periods (under "
                         f"{readers['before'].p.handler('requests', args.handler)}). Fix: one of "
                         f"{', '.join(found) or '(none: check --config prefix and the periods)'}, or all")
        pairs = {h: (readers["before"].period(h), readers["after"].period(h)) for h in names}
    except GraphiteError as e:
        return _fail(f"--graphite-web {args.graphite_web}: {e}. Fix: give graphite-web's http://HOST:PORT")
    explained = ex.rank_handlers(pairs)[: args.top if args.handler == "all" else 1]
    if args.json:
        print(json.dumps([ex.to_dict(e) for e in explained], indent=2))
    else:
        print("\n\n".join(ex.render(e) for e in explained) if explained else "no handler with requests in both")
    return 0
