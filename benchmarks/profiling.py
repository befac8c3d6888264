"""Cost of sampled profiling, and whether the budget holds: two tables, in one run.

    python benchmarks/profiling.py [--requests N] [--rounds R] [--pairs P] [--seconds S]
                                   [--budget-only] [--kind sync|asyncio|gevent] [--switch-cost]

The workload is the demo's ``deal`` handler on a real sqlite database with a table of 7
players (its DB and cache methods watched as in the demo).  The budget table's handlers
(``--kind``): sync, on this thread: ``deal, 1`` (a table of one player), ``deal``, ``deal
x10`` and ``deal x50`` (ten and fifty deals per request); ``asyncio``: a coroutine handler
(two deals around an ``await``) run on an event loop; ``gevent`` (the process
monkey-patched): a greenlet handler dealing three times with a switch after each, beside
four other greenlets switching with it, which pay for the profile's gate (``_gate``).  Times are this thread's CPU time (time spent
preempted by other processes on a busy machine is not counted; the profiler's cost is CPU).

**Cost per row.**  Profiling not configured; configured with rate 0 (the per-request check
only); 0.01; 1.0 (every request) -- these three with the budget off (1.0), so the rate
stays where it is set -- and the defaults, rate 0.01 with a 0.2 % budget.  The last two rows
are the defaults (min_interval 60 s too) under a scan: every request has a never-seen
handler name, so every one is due under min_interval, and only the budget keeps them from
all being profiled.  R rounds of N requests, rows interleaved; the ratio is the median of
the per-round ratios to "not configured" (for the scan: to the same scan not configured),
with the spread [min..max] of those ratios.

**Measured vs configured budget.**  What profiling costs is two numbers, each measured on
its own: what one profiled request costs (``extra``), and how many requests the policy
profiles under a budget.  ``extra`` is measured in pairs: P pairs of sequences of K
requests, the first request profiled in one sequence of each pair and not in the other,
in random order; ``extra`` is the difference of the mean CPU time of the sequences (what
the profiled request and the requests after it paid more).  Then each (rate, budget) runs
for S seconds with the policy deciding (a flush every 0.1 s, as the flush thread does every
interval; after S/3 seconds of warm-up that spends the credit held at the start), and the
measured cost is ``profiled share x extra / (per-request time + profiled share x extra)``:
the share of the CPU time spent because of profiling.  ``charged us`` is what the policy
charged per profiled request (``callwatch.profiling.cost_ns``), ``charged`` the charges'
share of the process's CPU time in the run (what the policy holds under the budget).  ``after`` is the share of
``extra`` paid by the requests after the profiled one: ``AFTER_SHARE`` in
``callwatch/profiling/_policy.py`` must stay above it.
"""

from __future__ import annotations

import sys

if "gevent" in sys.argv[1:]:  # --kind gevent: patched before anything imports threading
    from gevent import monkey

    monkey.patch_all()

import argparse
import platform
import random
import statistics
import time
from typing import Any, Callable, cast

import callwatch
from callwatch import _core, _request
from callwatch.demo import game
from callwatch.demo.run import CONFIG
from callwatch.profiling import Profiler
from callwatch.profiling._policy import AFTER_SHARE

ROWS: list[tuple[str, Any]] = [
    ("profiling not configured", None),
    ("profile rate 0", (0.0, 1.0)),
    ("profile rate 0.01", (0.01, 1.0)),
    ("profile rate 1.0", (1.0, 1.0)),
    ("rate 0.01, budget 0.2 %", (0.01, 0.002)),  # the defaults
    ("not configured, never-seen names", "scan-off"),
    ("defaults, never-seen names", "scan"),
]

#: (rate, budget) rows of the budget table: high rates, so that the budget decides.
BUDGETS = [(0.01, 0.002), (0.01, 0.005), (0.05, 0.02), (0.05, 0.01), (0.2, 0.05), (0.2, 0.005)]

clock = time.thread_time_ns
FLUSH_S = 0.1
K = 10  # requests per sequence in the paired measurement


def setup() -> game.Server:
    server = game.Server()
    for uid in range(1, 10):
        server.db.add_user(uid, f"p{uid}")
    server.db.add_table(1, "t")
    for uid in range(1, 8):
        server.db.save_seat(1, uid)
    server.db.add_table(2, "t2")  # one player: a short deal
    server.db.save_seat(2, 9)
    return server


def configure(rate: Any) -> None:
    from callwatch.config import load

    cfg: dict[str, Any] = {}
    if rate == "scan":
        cfg["profile"] = {}  # every default (min_interval on: the scan's names are all due)
    elif isinstance(rate, tuple):
        cfg["profile"] = {"rate": rate[0], "min_interval": 0, "budget": rate[1]}
    base = load(CONFIG)
    callwatch.configure({"watch": [{"target": w.target, "group": w.group} for w in base.watch], **cfg},
                        start_thread=False, strict=True)


def done() -> None:
    callwatch.shutdown()
    _core.collector.reset()


def handlers(server: game.Server, kinds: str) -> dict[str, Callable[[], Any]]:
    """The budget table's handlers: ``sync`` (on this thread, ~40 µs to ~5 ms), ``asyncio``
    (a coroutine handler on an event loop) or ``gevent`` (a greenlet handler, beside other
    greenlets switching with it: under gevent they pay for the gate while it profiles)."""
    deal = game.deal.__wrapped__  # type: ignore[attr-defined]

    def dealing(name: str, times: int, between: Callable[[], Any] = lambda: None) -> Callable[[], None]:
        @callwatch.handler(name)
        def handler() -> None:
            for _ in range(times):
                deal(server, 1)
                between()
        return handler  # type: ignore[no-any-return]
    if kinds == "asyncio":
        import asyncio

        loop = asyncio.new_event_loop()

        @callwatch.handler("deal_async")
        async def deal_async() -> None:
            deal(server, 1)
            await asyncio.sleep(0)
            deal(server, 2)
        return {"asyncio": lambda: loop.run_until_complete(deal_async())}
    if kinds == "gevent":
        import gevent

        def other() -> None:
            for _ in range(3):
                sum(range(300))
                gevent.sleep(0)
        in_greenlet = dealing("deal_gevent", 3, lambda: gevent.sleep(0))
        return {"gevent": lambda: gevent.joinall([gevent.spawn(in_greenlet)] + [gevent.spawn(other) for _ in range(4)])}
    return {"deal, 1": lambda: game.deal(server, 2), "deal": lambda: game.deal(server, 1),
            "deal x10": dealing("deal_x10", 10), "deal x50": dealing("deal_x50", 50)}


# -- cost per row ----------------------------------------------------------------------


def measure(server: game.Server, rate: Any, n: int) -> float:
    configure(rate)
    scan = rate in ("scan", "scan-off")
    try:
        p = cast("Profiler | None", _request.profiler)
        t = clock()
        for i in range(n):
            if scan:
                with callwatch.request(f"scan{i}"):
                    game.deal.__wrapped__(server, 1)  # type: ignore[attr-defined]
            else:
                game.deal(server, 1)
            if p is not None and i % 200 == 199:
                p.on_flush()  # what the flush thread does every interval (here: every 200 requests)
        return (clock() - t) / n
    finally:
        done()


def cost_table(server: game.Server, n: int, rounds: int) -> None:
    times: dict[str, list[float]] = {name: [] for name, _ in ROWS}
    for _ in range(rounds):
        for name, rate in ROWS:
            times[name].append(measure(server, rate, n))
    print(f"| {'row':<32} | {'us/request':>10} | {'x not configured':>16} | {'spread':>13} |")
    print(f"|{'-' * 34}|{'-' * 11}:|{'-' * 17}:|{'-' * 15}|")
    for name, rate in ROWS:
        against = times["not configured, never-seen names" if rate == "scan" else ROWS[0][0]]
        ratios = [t / a for t, a in zip(times[name], against)]
        print(f"| {name:<32} | {statistics.median(times[name]) / 1000:>10.1f} | "
              f"{statistics.median(ratios):>16.3f} | {min(ratios):.3f}..{max(ratios):.3f} |")


# -- measured vs configured budget -------------------------------------------------------


def extra_per_profiled(fn: Callable[[], Any], pairs: int) -> tuple[float, float, float]:
    """(CPU ns per unprofiled request, extra CPU ns per profiled request, share of that
    extra paid by the requests after it), from paired sequences (see module docstring)."""
    configure((0.0, 1.0))  # the profiler is there, the countdown never picks
    policy = cast(Profiler, _request.profiler).policy
    try:
        def sequence(profiled: bool) -> list[int]:
            policy.skip = 1 if profiled else sys.maxsize
            out = []
            for _ in range(K):
                t = clock()
                fn()
                out.append(clock() - t)
            return out

        for _ in range(10):
            sequence(True), sequence(False)
        with_: list[list[int]] = []
        without: list[list[int]] = []
        for i in range(pairs):
            order = [True, False]
            random.shuffle(order)
            for profiled in order:
                (with_ if profiled else without).append(sequence(profiled))
            if i % 50 == 49:
                _core.collector.swap(0)
        per_pos = [statistics.mean(s[j] for s in with_) - statistics.mean(s[j] for s in without) for j in range(K)]
        base = statistics.mean(statistics.mean(s) for s in without)
        extra = sum(per_pos)
        return base, extra, sum(per_pos[1:]) / extra if extra > 0 else 0.0
    finally:
        done()


def run_policy(fn: Callable[[], Any], rate: float, budget: float, seconds: float) -> tuple[float, float, float]:
    """(share of requests profiled, mean charge per profiled request in ns, charges /
    the process's CPU time) over ``seconds`` with the policy deciding, after a warm-up
    of a third of that."""
    configure((rate, budget))
    p = cast(Profiler, _request.profiler)
    charges: list[int] = []
    charge = p.policy.charge

    def counting(ns: int) -> None:
        charges.append(ns)
        charge(ns)

    p.policy.charge = counting  # type: ignore[method-assign]  # counts, then charges
    try:
        counted, cpu = 0, 0.0
        for stretch, measured in ((seconds / 3, False), (seconds, True)):
            charges.clear()
            cpu0 = time.process_time()
            n, end, flush = 0, time.monotonic() + stretch, time.monotonic() + FLUSH_S
            while (now := time.monotonic()) < end:
                fn()
                n += 1
                if now >= flush:
                    p.on_flush()
                    flush = now + FLUSH_S
            if measured:
                counted, cpu = n, time.process_time() - cpu0
        return len(charges) / counted, (statistics.mean(charges) if charges else 0.0), sum(charges) / (cpu * 1e9)
    finally:
        done()


def budget_table(fns: dict[str, Callable[[], Any]], pairs: int, seconds: float) -> bool:
    print(f"| {'handler':<9} | {'rate':>5} | {'budget':>6} | {'us/req':>7} | {'extra us':>8} | {'after':>5} | "
          f"{'charged us':>10} | {'profiled':>8} | {'charged':>7} | {'measured':>8} | within |")
    print(f"|{'-' * 11}|{'-' * 6}:|{'-' * 7}:|{'-' * 8}:|{'-' * 9}:|{'-' * 6}:|{'-' * 11}:|{'-' * 9}:|{'-' * 8}:|"
          f"{'-' * 9}:|--------|")
    ok = True
    for label, fn in fns.items():
        base, extra, after = extra_per_profiled(fn, pairs)
        for rate, budget in BUDGETS:
            share, charged, charged_share = run_policy(fn, rate, budget, seconds)
            cost = share * extra / (base + share * extra)
            within = cost <= budget
            ok = ok and within
            print(f"| {label:<9} | {rate:>5} | {budget:>6.1%} | {base / 1e3:>7.1f} | {extra / 1e3:>8.0f} | "
                  f"{after:>5.1%} | {charged / 1e3:>10.0f} | {share:>8.2%} | {charged_share:>7.2%} | {cost:>8.2%} | "
                  f"{'yes' if within else 'NO':>6} |")
    return ok


def switch_cost(rounds: int = 5, n: int = 100_000) -> None:
    """What a greenlet switch costs with the gate's tracer on (between two greenlets it
    does not profile), against none: ``_gate.SWITCH_NS`` must be above the difference
    (greenlet ping-pong, thread CPU time, best of ``rounds``)."""
    import greenlet

    from callwatch.profiling._gate import SWITCH_NS, GreenletGate

    clock = time.thread_time_ns
    gate = GreenletGate(_NoYappi, None)
    gate._profiled = object()  # a profile is on, of a greenlet that is not switching here

    def pingpong() -> float:
        def ping() -> None:
            for _ in range(n):
                b.switch()

        def pong() -> None:
            while True:
                a.switch()
        a, b = greenlet.greenlet(ping), greenlet.greenlet(pong)
        t = clock()
        a.switch()
        return (clock() - t) / (2 * n)

    bare, traced = [], []
    for _ in range(rounds):
        bare.append(pingpong())
        greenlet.settrace(gate._switch)
        try:
            traced.append(pingpong())
        finally:
            greenlet.settrace(None)
    extra = min(traced) - min(bare)
    print(f"greenlet switch: {min(bare):.0f} ns bare, {min(traced):.0f} ns with the gate's tracer: +{extra:.0f} ns "
          f"(SWITCH_NS {SWITCH_NS}: {'above' if SWITCH_NS >= extra else 'BELOW'})")


class _NoYappi:
    """What the gate calls of yappi, doing nothing (``switch_cost`` traces no profiled greenlet)."""

    @staticmethod
    def start(builtins: int, threads: int) -> None:
        pass

    @staticmethod
    def stop() -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--pairs", type=int, default=150, help="pairs of sequences measuring a profiled request")
    ap.add_argument("--seconds", type=float, default=3.0, help="per (rate, budget) row, after the warm-up")
    ap.add_argument("--budget-only", action="store_true", help="only the measured vs configured table")
    ap.add_argument("--switch-cost", action="store_true", help="only calibrate _gate.SWITCH_NS (gevent)")
    ap.add_argument("--kind", choices=["sync", "asyncio", "gevent"], default="sync",
                    help="the budget table's handlers (gevent: the process is monkey-patched first)")
    args = ap.parse_args(argv)
    if args.switch_cost:
        switch_cost()
        return 0
    server = setup()
    print(f"Python {platform.python_version()}, deal handler (7 players, sqlite), thread CPU time")
    if not args.budget_only and args.kind == "sync":
        print(f"\nCost per row: {args.rounds} rounds x {args.requests} requests, median of per-round ratios")
        cost_table(server, args.requests, args.rounds)
    print(f"\nMeasured vs configured budget ({args.pairs} pairs of {K}-request sequences per handler, "
          f"{args.seconds:g} s per row; AFTER_SHARE {AFTER_SHARE:.0%})")
    ok = budget_table(handlers(server, args.kind), args.pairs, args.seconds)
    print("\nevery row within its budget" if ok else "\nNOT every row within its budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
