"""ns per watched call: callwatch's wrapper against a hand-written floor, in one run.

    python benchmarks/micro.py [--calls N] [--repeats R] [--check] [--cpu]

Rows (each: best of R rounds of N calls, minus the cost of the empty loop; rounds of all
rows are interleaved so machine noise hits every row alike):

  bare call                 f(x)
  floor wrapper             *args/**kwargs wrapper: two perf_counter_ns(), a count, a time sum
  floor + ContextVar.get()  the floor plus one ContextVar.get(): the least any per-request
                            attribution can cost
  callwatch watched         @callwatch.watch inside a request (what users get)
  callwatch watched, group  the same with group: db (also tracks the group's time)
  callwatch generic wrapper the *args/**kwargs fallback (C functions, odd signatures)
  pure Python: ...          the three callwatch rows again without the C speedup
                            (CALLWATCH_PURE_PYTHON=1, or no compiler at install)

Then the cost per request of @callwatch.handler (allocating the request's state, setting
the ContextVar, and adding the request to the interval's table, percentile sketch
included), with no watched call and with 5; and with 10, 100 and 1,000 functions watched
in all, of which the request calls one (the most recently watched): what a request costs
must not depend on the functions it does not call.

--cpu times rounds with this thread's CPU clock instead of the wall clock (steadier on a
busy machine: time the thread spends preempted is not counted).

--check exits 1 unless "callwatch watched" <= 1.15 x "floor + ContextVar.get()".
"""

from __future__ import annotations

import argparse
import contextvars
import platform
import sys
import time
from time import perf_counter_ns
from typing import Any, Callable

import callwatch
from callwatch import _core

TARGET = 1.15


def f(x: int) -> int:
    return x


def floor_wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
    count = 0
    total = 0

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal count, total
        t0 = perf_counter_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            total += perf_counter_ns() - t0
            count += 1

    return wrapper


_cv: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("bench", default=None)


def floor_cv_wrapper(fn: Callable[..., Any]) -> Callable[..., Any]:
    count = 0
    total = 0
    get = _cv.get

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal count, total
        get()
        t0 = perf_counter_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            total += perf_counter_ns() - t0
            count += 1

    return wrapper


class _Opaque:
    """A callable without a Python signature: callwatch falls back to *args/**kwargs."""

    def __call__(self, x: int) -> int:
        return x


#: What rounds are timed with (--cpu: time.thread_time_ns).
_clock = perf_counter_ns


def run_loop(fn: Callable[[int], int] | None, n: int) -> float:
    r = range(n)
    if fn is None:
        t = _clock()
        for _ in r:
            pass
        return _clock() - t
    t = _clock()
    for _ in r:
        fn(1)
    return _clock() - t


def measure(calls: int, repeats: int) -> list[tuple[str, float]]:
    rows: list[tuple[str, Callable[[int], int] | None]] = [
        ("empty loop", None),
        ("bare call", f),
        ("floor wrapper", floor_wrapper(f)),
        ("floor + ContextVar.get()", floor_cv_wrapper(f)),
        ("callwatch watched", callwatch.watch(name="bench_plain")(f)),
        ("callwatch watched, group", callwatch.watch(name="bench_group", group="bench")(f)),
        ("callwatch generic wrapper", callwatch.watch(name="bench_generic")(_Opaque())),
    ]
    if _core._speedups is not None:  # the same wrappers without the C speedup
        _core.use_speedups = False
        rows += [
            ("  pure Python: watched", callwatch.watch(name="bench_py")(f)),
            ("  pure Python: group", callwatch.watch(name="bench_py_group", group="bench")(f)),
            ("  pure Python: generic", callwatch.watch(name="bench_py_generic")(_Opaque())),
        ]
        _core.use_speedups = True
    best = {name: float("inf") for name, _ in rows}
    with callwatch.request("bench"):  # the watched rows run inside a request, as in a server
        for _ in range(repeats):
            for name, fn in rows:
                best[name] = min(best[name], run_loop(fn, calls) / calls)
    loop = best.pop("empty loop")
    return [(name, ns - loop) for name, ns in best.items()]


def measure_requests(requests: int, repeats: int) -> list[tuple[str, float]]:
    """ns per request: a bare function vs the same under @callwatch.handler."""
    get = callwatch.watch(name="bench_req_get", group="bench_req")(f)

    def body0() -> int:
        return 1

    def body5_bare() -> int:
        for i in range(5):
            f(i)
        return 1

    def body5() -> int:
        for i in range(5):
            get(i)
        return 1

    rows = [
        ("request, bare (0 calls)", body0),
        ("request, @handler (0 calls)", callwatch.handler("bench_r0")(body0)),
        ("request, bare (5 calls)", body5_bare),
        ("request, @handler (5 watched calls)", callwatch.handler("bench_r5")(body5)),
        ("5 watched calls outside any handler", body5),
    ]
    best = {name: float("inf") for name, _ in rows}
    for _ in range(repeats):
        for name, fn in rows:
            t = _clock()
            for _ in range(requests):
                fn()
            best[name] = min(best[name], (_clock() - t) / requests)
    return list(best.items())


def measure_configured(requests: int, repeats: int) -> list[tuple[str, float]]:
    """ns per request of a handler calling one watched function, with n watched in all."""
    out = []
    for n in (10, 100, 1000):
        last = f
        while sum(1 for e in _core.registry.entries if not e.is_group) <= n:
            last = callwatch.watch(name=f"bench_configured_{len(_core.registry.entries)}")(f)

        def body(called: Callable[[int], int] = last) -> int:
            return called(1)

        h = callwatch.handler(f"bench_configured_{n}")(body)
        best = float("inf")
        for _ in range(repeats):
            t = _clock()
            for _ in range(requests):
                h()
            best = min(best, (_clock() - t) / requests)
        out.append((f"request, 1 of {n:,} watched called", best))
    return out


async def af(x: int) -> int:
    return x


def measure_async(calls: int, repeats: int) -> list[tuple[str, float]]:
    """ns per ``await`` of an async function, bare and watched, inside one request."""
    import asyncio

    rows: list[tuple[str, Callable[[int], Any]]] = [("await, bare", af),
                                                   ("await, callwatch watched", callwatch.watch(name="bench_async")(af))]
    if _core._speedups is not None:
        _core.use_speedups = False
        rows.append(("  pure Python: await watched", callwatch.watch(name="bench_async_py")(af)))
        _core.use_speedups = True

    async def loop(fn: Callable[[int], Any]) -> int:
        t = _clock()
        for i in range(calls):
            await fn(i)
        return _clock() - t

    async def main() -> dict[str, float]:
        best = {name: float("inf") for name, _ in rows}
        async with callwatch.request("bench_async"):
            for _ in range(repeats):
                for name, fn in rows:
                    best[name] = min(best[name], await loop(fn) / calls)
        return best

    return list(asyncio.run(main()).items())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--check", action="store_true", help=f"exit 1 unless the target ({TARGET}x) is met")
    ap.add_argument("--cpu", action="store_true", help="time with the thread's CPU clock")
    args = ap.parse_args(argv)
    global _clock
    if args.cpu:
        _clock = time.thread_time_ns
    gc_was = __import__("gc").isenabled()
    __import__("gc").disable()
    try:
        rows = dict(measure(args.calls, args.repeats))
        req_rows = dict(measure_requests(max(1, args.calls // 10), args.repeats))
        req_rows.update(measure_configured(max(1, args.calls // 10), args.repeats))
        async_rows = dict(measure_async(max(1, args.calls // 10), args.repeats))
    finally:
        if gc_was:
            __import__("gc").enable()
    _core.collector.swap(time.time())  # discard the benchmark's own numbers
    base = rows["floor + ContextVar.get()"]
    print(f"Python {platform.python_version()} on {platform.machine()}, "
          f"{args.repeats} rounds x {args.calls} calls, best round, empty loop subtracted")
    print(f"| {'row':<26} | {'ns/call':>8} | {'x floor+cv':>10} |")
    print(f"|{'-' * 28}|{'-' * 10}:|{'-' * 11}:|")
    for name, ns in rows.items():
        print(f"| {name:<26} | {ns:>8.1f} | {ns / base:>10.2f} |")
    print()
    print(f"| {'per request':<36} | {'ns/request':>10} | {'overhead ns':>11} |")
    print(f"|{'-' * 38}|{'-' * 11}:|{'-' * 12}:|")
    for name, ns in req_rows.items():
        bare = req_rows["request, bare (5 calls)" if "5" in name else "request, bare (0 calls)"]
        print(f"| {name:<36} | {ns:>10.0f} | {ns - bare:>11.0f} |")
    print()
    print(f"| {'async (per await)':<36} | {'ns/call':>10} | {'overhead ns':>11} |")
    print(f"|{'-' * 38}|{'-' * 11}:|{'-' * 12}:|")
    for name, ns in async_rows.items():
        print(f"| {name:<36} | {ns:>10.0f} | {ns - async_rows['await, bare']:>11.0f} |")
    ratio = rows["callwatch watched"] / base
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"callwatch watched = {ratio:.2f} x floor+ContextVar ({verdict} the {TARGET} x target)")
    return 0 if ratio <= TARGET or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
