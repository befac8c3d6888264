"""The ``callwatch`` command: one small module per subcommand."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Sequence

from . import alerts, callgraph, check_config, demo, diff, explain, grafana, leaks, report, stats

__all__ = ["main"]

SUBCOMMANDS = (check_config, demo, stats, diff, callgraph, report, explain, alerts, grafana, leaks)


def _version() -> str:
    from .. import __version__  # read from the installed metadata, once, by the package

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callwatch",
        description="Per-handler response time and watched-call metrics for Python servers, in Graphite.")
    parser.add_argument("--version", action="version", version=f"callwatch {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in SUBCOMMANDS:
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``callwatch`` command with ``argv`` (``sys.argv[1:]`` when None); returns
    its exit code: 0 done, 2 bad input (said on stderr), 130 interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`callwatch stats --json | head`): stop quietly, as a
        # command killed by SIGPIPE would; stdout goes to devnull so that the
        # interpreter's own flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
