"""``callwatch alerts check``: the YAML's alert rules against graphite-web, Nagios-style."""

from __future__ import annotations

import argparse
import sys

from ..config import ConfigError, load


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("alerts", help="check the alert rules against graphite-web (exit 0/1/2/3)",
                       description="Evaluate the alert rules of the config against graphite-web's render "
                                   "API. Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios/Icinga).")
    sub2 = p.add_subparsers(dest="alerts_command", metavar="check")
    c = sub2.add_parser("check", help="evaluate the rules once")
    c.add_argument("--config", required=True, metavar="FILE")
    c.add_argument("--graphite-web", required=True, metavar="URL", help="e.g. http://127.0.0.1:8080")
    c.add_argument("--json", action="store_true")
    c.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="give up (UNKNOWN) after this long in all (default 30; 10 per request at most)")
    c.add_argument("--webhook", metavar="URL", help="POST the JSON result here when not OK "
                                                    "(default: alerts.webhook of the config)")
    c.set_defaults(func=run)

    def usage(args: argparse.Namespace) -> int:
        p.print_help(sys.stderr)
        return 3

    p.set_defaults(func=usage)


def run(args: argparse.Namespace) -> int:
    from .. import alerts

    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(f"UNKNOWN callwatch: the config is not valid\n{e}")
        return alerts.UNKNOWN
    if not args.timeout > 0:
        print(f"UNKNOWN callwatch: --timeout {args.timeout:g}: give a number of seconds > 0")
        return alerts.UNKNOWN
    try:
        results = alerts.check(cfg, args.graphite_web, total=args.timeout,
                               timeout=min(alerts.REQUEST_TIMEOUT, args.timeout))
    except Exception as e:  # a monitoring plugin answers UNKNOWN, never a traceback
        print(f"UNKNOWN callwatch: the check failed ({type(e).__name__}: {e})")
        return alerts.UNKNOWN
    code = results[-1].status
    if args.json:
        print(alerts.to_json(results))
    else:
        print(f"CALLWATCH {alerts.NAMES[code]} - {results[-1].message}")
        for r in results[:-1]:
            print(r.line())
    webhook = args.webhook or cfg.alerts.webhook
    if webhook and code != alerts.OK:
        try:
            alerts.post_webhook(webhook, results)
        except Exception as e:
            print(f"(webhook {webhook} failed: {e})", file=sys.stderr)
    return code
