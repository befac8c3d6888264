"""``callwatch demo``: the card-game server, a table of 2 players then 7, end to end."""

from __future__ import annotations

import argparse
import sys

from ..config import parse_host_port


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("demo", help="run the card-game demo (2 players, then 7)",
                       description="Run a small card-game server on sqlite under load, first with "
                                   "a table of 2 players, then 7, and show which calls grew.")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load in all (default 30)")
    p.add_argument("--interval", type=int, default=5, help="flush interval in seconds (default 5)")
    p.add_argument("--threads", type=int, default=2, help="load threads (default 2)")
    p.add_argument("--graphite", metavar="HOST:PORT", help="also push to carbon's plaintext port")
    p.add_argument("--config", metavar="FILE",
                   help="take the graphite settings (host, port, protocol, prefix, tags) from this YAML")
    p.add_argument("--graphite-web", metavar="URL", help="graphite-web URL, for the hints printed at the end")
    p.add_argument("--out", default="callwatch-demo-output", metavar="DIR",
                   help="where profile dumps and the call graph go (default ./callwatch-demo-output)")
    p.add_argument("--no-profile", action="store_true", help="no sampled profiles, dumps or call graph")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo.run import run as run_demo

    if args.duration <= 0 or args.interval < 1 or args.threads < 1:
        print("callwatch demo: --duration must be > 0, --interval >= 1, --threads >= 1", file=sys.stderr)
        return 2
    graphite = None
    if args.graphite:
        try:
            graphite = parse_host_port(args.graphite)
        except ValueError as e:
            print(f"callwatch demo: --graphite: {e}", file=sys.stderr)
            return 2
    graphite_cfg = None
    if args.config:
        from ..config import ConfigError, load

        try:
            graphite_cfg = load(args.config).graphite
        except ConfigError as e:
            print(e, file=sys.stderr)
            return 2
    result = run_demo(duration=args.duration, interval=args.interval, graphite=graphite,
                      graphite_web=args.graphite_web, threads=args.threads, graphite_config=graphite_cfg,
                      output=None if args.no_profile else args.out)
    return 0 if any(g.after > g.before for g in result.growth) else 1
