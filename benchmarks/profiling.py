"""Handler-level cost of sampled profiling, at rates 0, 0.01 and 1.0, in one run.

    python benchmarks/profiling.py [--requests N] [--rounds R]

The workload is the demo's ``deal`` handler on a real sqlite database with a table of 7
players (its DB and cache methods watched as in the demo).  Rows: profiling not
configured; configured with rate 0 (the per-request check only); 0.01; 1.0 (every
request) -- these three with the budget control off, so the rate stays where it is set --
and the defaults, rate 0.01 with a 2 % budget, where the rate adapts at every flush
(simulated every 200 requests).  The last row is the defaults (min_interval 60 s too)
under a scan: every request has a never-seen handler name, so every one is due under
min_interval, and only the budget keeps them from all being profiled.  Best round of R,
rounds of all rows interleaved; the ratio is against "not configured" in the same run
(for the scan, against the same scan not configured).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from typing import Any

import callwatch
from callwatch import _core, _request
from callwatch.demo import game
from callwatch.demo.run import CONFIG

ROWS: list[tuple[str, Any]] = [
    ("profiling not configured", None),
    ("profile rate 0", (0.0, 1.0)),
    ("profile rate 0.01", (0.01, 1.0)),
    ("profile rate 1.0", (1.0, 1.0)),
    ("rate 0.01, budget 2 %", (0.01, 0.02)),  # the defaults: the rate adapts at each flush
    ("not configured, never-seen names", "scan-off"),
    ("defaults, never-seen names", "scan"),
]


def setup() -> game.Server:
    server = game.Server()
    for uid in range(1, 10):
        server.db.add_user(uid, f"p{uid}")
    server.db.add_table(1, "t")
    for uid in range(1, 8):
        server.db.save_seat(1, uid)
    return server


def configure(rate: Any) -> None:
    from callwatch.config import load

    cfg: dict[str, Any] = {}
    if rate == "scan":
        cfg["profile"] = {}  # every default: rate 0.01, min_interval 60, budget 0.02
    elif isinstance(rate, tuple):
        cfg["profile"] = {"rate": rate[0], "min_interval": 0, "budget": rate[1]}
    base = load(CONFIG)
    callwatch.configure({"watch": [{"target": w.target, "group": w.group} for w in base.watch], **cfg},
                        start_thread=False, strict=True)


def measure(server: game.Server, rate: Any, n: int) -> float:
    configure(rate)
    scan = rate in ("scan", "scan-off")
    try:
        p = _request.profiler
        t = time.perf_counter_ns()
        for i in range(n):
            if scan:
                with callwatch.request(f"scan{i}"):
                    game.deal.__wrapped__(server, 1)  # type: ignore[attr-defined]
            else:
                game.deal(server, 1)
            if p is not None and i % 200 == 199:
                p.on_flush()  # what the flush thread does every interval (here: every 200 requests)
        return (time.perf_counter_ns() - t) / n
    finally:
        callwatch.shutdown()
        _core.collector.reset()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    server = setup()
    best = {name: float("inf") for name, _ in ROWS}
    for _ in range(args.rounds):
        for name, rate in ROWS:
            best[name] = min(best[name], measure(server, rate, args.requests))
    base = best[ROWS[0][0]]
    print(f"Python {platform.python_version()}, deal handler (7 players, sqlite), "
          f"{args.rounds} rounds x {args.requests} requests, best round")
    print(f"| {'row':<32} | {'us/request':>10} | {'x not configured':>16} |")
    print(f"|{'-' * 34}|{'-' * 11}:|{'-' * 17}:|")
    for name, rate in ROWS:
        ratio = best[name] / (best["not configured, never-seen names"] if rate == "scan" else base)
        print(f"| {name:<32} | {best[name] / 1000:>10.1f} | {ratio:>16.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
