"""``callwatch grafana``: dashboards, alert rules and provisioning files from the config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import ConfigError, load


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("grafana", help="generate Grafana dashboards, alert rules and provisioning",
                       description="Write Grafana provisioning (datasource, dashboards, alert rules) and "
                                   "dashboard JSON for the metrics this config produces.")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--graphite-web", default="http://127.0.0.1:8080", metavar="URL",
                   help="the datasource URL Grafana uses (default http://127.0.0.1:8080)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load(args.config, env={})
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    try:
        from ..grafana import generate
    except ImportError:
        print("callwatch grafana: needs grafanalib. Fix: pip install 'callwatch[grafana]'", file=sys.stderr)
        return 2
    try:
        files = generate(cfg, Path(args.out), args.graphite_web)
    except ValueError as e:
        print(f"callwatch grafana: {e}", file=sys.stderr)
        return 2
    for f in files:
        print(f)
    return 0
