"""Python 3.12+: counting watched calls through sys.monitoring instead of a wrapper.

    python3.12 benchmarks/monitoring.py [--calls N] [--rounds R]

sys.monitoring can call a function on every start of a chosen code object (PY_START,
enabled with set_local_events only for that code), without replacing the function.  Rows,
ns per call of f(x), in one run: the bare call; callwatch's watched wrapper (counts AND
times, per request); a PY_START callback that only counts into a global; the same callback
attributing the count to the current request (one ContextVar.get(), as callwatch needs).
Counting alone cannot give the time per call, so it would be an option for functions
where only the count matters.
"""

from __future__ import annotations

import argparse
import sys
from time import perf_counter_ns
from typing import Any, Callable

import callwatch
from callwatch import _core, _state


def f(x: int) -> int:
    return x


def g(x: int) -> int:  # a second, identical function for the per-request counting row
    return x


def loop(fn: Callable[[int], int] | None, n: int) -> float:
    t = perf_counter_ns()
    if fn is None:
        for _ in range(n):
            pass
    else:
        for _ in range(n):
            fn(1)
    return (perf_counter_ns() - t) / n


def main(argv: list[str] | None = None) -> int:
    if sys.version_info < (3, 12):
        print("sys.monitoring needs Python 3.12+")
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args(argv)
    mon: Any = sys.monitoring  # type: ignore[attr-defined]
    tool = mon.PROFILER_ID + 1
    mon.use_tool_id(tool, "callwatch-bench")
    counts = [0]
    entry = _core.registry.function("monitored_g", None)
    key = entry.index
    get = _core._get
    record = _state.record
    CALLS = _state.CALLS

    def count_only(code: Any, offset: int) -> None:
        counts[0] += 1

    def count_per_request(code: Any, offset: int) -> None:
        st = get()
        if st is not None:
            record(st, key)[CALLS] += 1

    watched = callwatch.watch(name="bench_watched")(f)
    best: dict[str, float] = {}

    def measure(name: str, fn: Callable[[int], int] | None, callback: Any = None, code: Any = None) -> None:
        if callback is not None:
            mon.register_callback(tool, mon.events.PY_START, callback)
            mon.set_local_events(tool, code, mon.events.PY_START)
        try:
            best[name] = min(best.get(name, float("inf")), loop(fn, args.calls))
        finally:
            if callback is not None:
                mon.set_local_events(tool, code, 0)
                mon.register_callback(tool, mon.events.PY_START, None)

    with callwatch.request("bench"):
        for _ in range(args.rounds):
            measure("empty loop", None)
            measure("bare call", f)
            measure("callwatch wrapper (count + time)", watched)
            measure("sys.monitoring, count only", f, count_only, f.__code__)
            measure("sys.monitoring, count per request", g, count_per_request, g.__code__)
    mon.free_tool_id(tool)
    empty = best.pop("empty loop")
    print(f"Python {sys.version.split()[0]}, {args.rounds} rounds x {args.calls} calls, best round, "
          "empty loop subtracted")
    print("| row | ns/call |")
    print("|---|---:|")
    for name, v in best.items():
        print(f"| {name} | {v - empty:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
