"""``callwatch check-config FILE``: validate a config and show what each target resolves to.

It runs the same ``callwatch.config.prepare()`` as ``configure()``: every problem of the
file (keys, values, targets, dimensions, profiling) in one run, sorted by line, and
warnings for what would be accepted but never apply.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import _targets
from ..config import ConfigError, prepare


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("check-config", help="validate a YAML config and resolve its watch targets",
                       description="Validate a YAML config and resolve its watch targets. "
                                   "Exit 0 when valid, 2 when not.")
    p.add_argument("file", help="the YAML file")
    p.add_argument("--path", action="append", default=[], metavar="DIR",
                   help="add DIR to sys.path before importing targets (repeatable; "
                        "the current directory is always added)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for d in [os.getcwd(), *args.path]:
        if d not in sys.path:
            sys.path.insert(0, d)
    try:
        prepared = prepare(args.file, env={})
    except ConfigError as e:
        print(e, file=sys.stderr)
        print(f"{args.file}: {len(e.problems)} problem(s); not valid", file=sys.stderr)
        return 2
    cfg, resolved = prepared.config, prepared.resolved
    g = cfg.graphite
    dest = f"{g.host}:{g.port} ({g.protocol})" if g.host else "nowhere (graphite.host is null: in-process only)"
    print(f"{args.file}: graphite {dest}, every {g.interval} s, prefix '{g.prefix}', "
          f"host '{cfg.host}', {'tagged' if g.tags else 'hierarchical'} names")
    for r in resolved:
        print(f"  {r.spec.where}: {r.describe()}")
    for w in cfg.watch:
        if w.mode == "sampled":
            print(f"  {w.where}: {w.target} -> sampled: matched against profiled functions' names")
    for p in prepared.warnings:
        print(f"warning: {p}", file=sys.stderr)
    n_presets = sum(isinstance(r, _targets.PresetUse) for r in resolved)
    print(f"{args.file}: valid, {len(resolved) - n_presets} function(s) and {n_presets} preset(s) watched"
          + (f", {len(prepared.warnings)} warning(s)" if prepared.warnings else ""))
    return 0
