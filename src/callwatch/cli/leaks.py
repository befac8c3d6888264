"""``callwatch leaks``: read the results of leak hunts (``memory.hunt_dir``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .._leakhunt import REPORT


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("leaks", help="print the newest leak hunt's report (memory.hunt_dir)",
                       description="Print the report of the newest leak hunt under DIR (memory.hunt_dir): the "
                                   "types that grew, objgraph's chain from a module to one of their objects, and "
                                   "tracemalloc's allocation sites that grew. Start a hunt by writing the seconds "
                                   "to hunt into DIR/start (every process) or DIR/start.PID (one process).")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--list", action="store_true", help="list every hunt's report instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if not root.is_dir():
        print(f"callwatch leaks: {root} is not a directory (give memory.hunt_dir)", file=sys.stderr)
        return 2
    reports = sorted(root.glob(f"*/{REPORT}"))  # <UTC time>-<pid>/: oldest first
    if not reports:
        print(f"callwatch leaks: no hunt has finished under {root}; start one with: echo 60 > {root / 'start'}",
              file=sys.stderr)
        return 1
    if args.list:
        for r in reports:
            print(r)
        return 0
    newest = reports[-1]
    print(f"# {newest}")
    print(newest.read_text(), end="")
    return 0
