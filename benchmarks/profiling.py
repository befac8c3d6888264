"""Handler-level cost of sampled profiling, at rates 0, 0.01 and 1.0, in one run.

    python benchmarks/profiling.py [--requests N] [--rounds R]

The workload is the demo's ``deal`` handler on a real sqlite database with a table of 7
players (its DB and cache methods watched as in the demo).  Rows: profiling not
configured; configured with rate 0 (the per-request check only); 0.01; 1.0 (every
request) -- these three with the budget control off, so the rate stays where it is set --
and the defaults, rate 0.01 with a 2 % budget, where the rate adapts at every flush
(simulated every 200 requests).  Best round of R, rounds
of all rows interleaved; the ratio is against "not configured" in the same run.
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
]


def setup() -> game.Server:
    server = game.Server()
    for uid in range(1, 10):
        server.db.add_user(uid, f"p{uid}")
    server.db.add_table(1, "t")
    for uid in range(1, 8):
        server.db.save_seat(1, uid)
    return server


def configure(rate: tuple[float, float] | None) -> None:
    from callwatch.config import load

    cfg: dict[str, Any] = {}
    if rate is not None:
        cfg["profile"] = {"rate": rate[0], "min_interval": 0, "budget": rate[1]}
    base = load(CONFIG)
    callwatch.configure({"watch": [{"target": w.target, "group": w.group} for w in base.watch], **cfg},
                        start_thread=False, strict=True)


def measure(server: game.Server, rate: tuple[float, float] | None, n: int) -> float:
    configure(rate)
    try:
        p = _request.profiler
        t = time.perf_counter_ns()
        for i in range(n):
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
    print(f"| {'row':<26} | {'us/request':>10} | {'x not configured':>16} |")
    print(f"|{'-' * 28}|{'-' * 11}:|{'-' * 17}:|")
    for name, _ in ROWS:
        print(f"| {name:<26} | {best[name] / 1000:>10.1f} | {best[name] / base:>16.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
