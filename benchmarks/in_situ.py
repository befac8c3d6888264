"""What a piece of callwatch costs in a tight loop, and right after a real redis round trip.

    python benchmarks/in_situ.py [--rounds 9]

Why this exists: benchmarks/macro.py found callwatch costing several times what
benchmarks/micro.py predicts.  This measures each piece both ways in one run:

  hot          the piece 20 000 times in a loop (caches warm; what micro.py sees)
  after a GET  (redis GET; piece) 2 000 times: the piece as it runs in a server, after the
               thread has waited in a syscall

Each time only the piece is timed (two perf_counter_ns() around it), and the same timing
of an empty lambda is subtracted; rows are interleaved; the median of the rounds is shown.

redis-server runs on loopback (started here, on a free port) and is pinned to another CPU
when there are two.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import macro  # noqa: E402  (start_redis, pin, median)

import callwatch  # noqa: E402
from callwatch import _core, _state  # noqa: E402


def noop(a: int, b: int) -> int:
    return a


def pieces() -> dict[str, Callable[[], Any]]:
    now = time.perf_counter_ns

    def arithmetic() -> int:
        s = 0
        for i in range(30):
            s += i * i
        return s

    def two_clock_reads() -> int:
        return now() - now()

    saved = _core.use_speedups
    _core.use_speedups = True
    c_watched = callwatch.watch(name="in_situ_c")(noop)
    _core.use_speedups = False
    py_watched = callwatch.watch(name="in_situ_py")(noop)
    _core.use_speedups = saved
    handler = callwatch.handler("in_situ")(lambda: None)
    col = _core.collector
    one_call = _core.new_state()  # a finished request that made one watched call
    rec = _state.record(one_call, getattr(c_watched, _core.MARK).index)
    rec[_state.CALLS], rec[_state.NS] = 1, 1000
    batch = [("in_situ_batch", 1000, 0, one_call) for _ in range(256)]

    def add_batch() -> None:  # what the fold does once per 256 requests
        with col._lock:
            col._intervals.add(batch)

    out: dict[str, Callable[[], Any]] = {
        "arithmetic loop (30 multiply-adds)": arithmetic,
        "2 x perf_counter_ns()": two_clock_reads,
        "@handler request, no calls": handler,
        "add 256 requests to the table (fold)": add_batch,
    }
    # The floor of any C wrapper: a C call layer that only passes the call on.
    passthrough = functools.partial(noop)
    out["noop(1, 2), not watched"] = lambda: noop(1, 2)
    out["noop(1, 2) through functools.partial (a C layer, no counting)"] = lambda: passthrough(1, 2)
    if _core._speedups is not None:
        out["watched call, C wrapper"] = lambda: c_watched(1, 2)
    out["watched call, pure Python"] = lambda: py_watched(1, 2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args(argv)
    server, port = macro.start_redis()
    pinned = macro.pin(server.pid)
    callwatch.configure({"naming": {"worker": "none"}, "graphite": {"interval": 1}}, strict=True)
    try:
        import redis

        get = redis.Redis(port=port).get
        get("k")
        rows = pieces()
        rows_all: dict[str, Callable[[], Any]] = {"(empty)": lambda: None, **rows}
        hot: dict[str, list[float]] = {k: [] for k in rows_all}
        cold: dict[str, list[float]] = {k: [] for k in rows_all}
        now = time.perf_counter_ns
        with callwatch.request("in_situ_outer"):  # the watched calls run inside a request
            for _ in range(args.rounds):
                for name, fn in rows_all.items():
                    # the piece timed on its own, each time: a GET's own noise stays out
                    total = 0
                    for _ in range(20_000):
                        t0 = now()
                        fn()
                        total += now() - t0
                    hot[name].append(total / 20_000)
                    total = 0
                    for _ in range(2_000):
                        get("k")
                        t0 = now()
                        fn()
                        total += now() - t0
                    cold[name].append(total / 2_000)
        for d in (hot, cold):  # minus the timing itself, measured the same way
            empty = d.pop("(empty)")
            for name in d:
                d[name] = [x - e for x, e in zip(d[name], empty)]
    finally:
        callwatch.shutdown()
        server.terminate()
        server.wait()

    median = macro.median
    print(f"Python {sys.version.split()[0]}, {args.rounds} rounds, median; {pinned}")
    print("| piece | hot ns | after a redis GET ns | x |")
    print("|---|---:|---:|---:|")
    for name in rows:
        h, c = median(hot[name]), median(cold[name])
        print(f"| {name} | {h:,.0f} | {c:,.0f} | {c / h if h > 0 else float('nan'):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
