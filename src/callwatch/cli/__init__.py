"""The ``callwatch`` command: one small module per subcommand."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import alerts, callgraph, check_config, demo, diff, grafana, stats

__all__ = ["main"]

SUBCOMMANDS = (check_config, demo, stats, diff, callgraph, alerts, grafana)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callwatch",
        description="Per-handler response time and watched-call metrics for Python servers, in Graphite.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in SUBCOMMANDS:
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
