"""ns per instrumented call: callwatch against what users would pick instead, in one run.

    python benchmarks/alternatives.py [--calls N] [--rounds R]

Every row wraps the same function ``f(x)`` and is called inside a request/handler where that
makes sense.  Rows: the bare call; the hand-written floor (two perf_counter_ns, a count, a
sum) plus one ContextVar.get(); callwatch's watched wrapper; prometheus_client
``Histogram.time()``; a statsd timer that sends one UDP datagram per call to a loopback
socket (the django-statsd style); an OpenTelemetry SDK span (TracerProvider with an
in-memory exporter behind a SimpleSpanProcessor); and the profilers with the function
called under them: cProfile, yappi, pyinstrument (its sampling cost spread per call).
Best of R rounds, rounds interleaved, empty-loop cost subtracted.  Targets: callwatch at
least 4x cheaper than prometheus, 15x than statsd per call, 40x than an OpenTelemetry span.
"""

from __future__ import annotations

import argparse
import platform
import socket
import sys
import time
from time import perf_counter_ns
from typing import Any, Callable

import callwatch
from callwatch import _core
from micro import floor_cv_wrapper  # benchmarks/ is on sys.path when run as a script


def f(x: int) -> int:
    return x


floor_cv = floor_cv_wrapper  # the same hand-written floor as benchmarks/micro.py


def prometheus_row() -> Callable[[int], int]:
    from prometheus_client import CollectorRegistry, Histogram

    h = Histogram("bench_seconds", "bench", registry=CollectorRegistry())
    return h.time()(f)  # type: ignore[no-any-return]


def statsd_row() -> tuple[Callable[[int], int], Callable[[], None]]:
    import statsd

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    client = statsd.StatsClient("127.0.0.1", rx.getsockname()[1])
    return client.timer("bench")(f), rx.close


def otel_row() -> Callable[[int], int]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")

    def spanned(x: int) -> int:
        with tracer.start_as_current_span("f"):
            return f(x)

    def wrapped(x: int) -> int:
        r = spanned(x)
        if len(exporter._finished_spans) > 10_000:  # keep memory flat between rounds
            exporter.clear()
        return r
    return wrapped


def loop(fn: Callable[[int], int] | None, n: int) -> float:
    if fn is None:
        t = perf_counter_ns()
        for _ in range(n):
            pass
        return (perf_counter_ns() - t) / n
    t = perf_counter_ns()
    for _ in range(n):
        fn(1)
    return (perf_counter_ns() - t) / n


def under_profiler(kind: str, n: int) -> float:
    if kind == "cProfile":
        import cProfile

        p = cProfile.Profile()
        p.enable()
        try:
            return loop(f, n)
        finally:
            p.disable()
    if kind == "yappi":
        import yappi

        yappi.start(builtins=True)
        try:
            return loop(f, n)
        finally:
            yappi.stop()
            yappi.clear_stats()
    from pyinstrument import Profiler

    prof = Profiler(interval=0.001)
    prof.start()
    try:
        return loop(f, n)
    finally:
        prof.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    statsd_fn, statsd_close = statsd_row()
    rows: dict[str, Callable[[int], int] | None] = {
        "empty loop": None,
        "bare call": f,
        "floor + ContextVar.get()": floor_cv(f),
        "callwatch watched": callwatch.watch(name="alt_bench")(f),
        "prometheus Histogram.time()": prometheus_row(),
        "statsd timer, UDP per call": statsd_fn,
        "OpenTelemetry SDK span": otel_row(),
    }
    best = {name: float("inf") for name in [*rows, "cProfile (whole run)", "yappi (whole run)",
                                           "pyinstrument (whole run)"]}
    with callwatch.request("bench"):
        for _ in range(args.rounds):
            for name, fn in rows.items():
                best[name] = min(best[name], loop(fn, args.calls))
            for kind in ("cProfile", "yappi", "pyinstrument"):
                best[f"{kind} (whole run)"] = min(best[f"{kind} (whole run)"], under_profiler(kind, args.calls))
    statsd_close()
    _core.collector.swap(time.time())
    empty = best.pop("empty loop")
    ns = {k: v - empty for k, v in best.items()}
    cw = ns["callwatch watched"]
    print(f"Python {platform.python_version()} on {platform.machine()}, {args.rounds} rounds x {args.calls} calls, "
          "best round, empty loop subtracted")
    print(f"| {'row':<28} | {'ns/call':>9} | {'x callwatch':>11} |")
    print(f"|{'-' * 30}|{'-' * 10}:|{'-' * 12}:|")
    for name, v in ns.items():
        print(f"| {name:<28} | {v:>9.1f} | {v / cw:>11.1f} |")
    targets = {"prometheus Histogram.time()": 4, "statsd timer, UDP per call": 15, "OpenTelemetry SDK span": 40}
    ok = True
    for name, want in targets.items():
        got = ns[name] / cw
        verdict = "meets" if got >= want else "MISSES"
        ok &= got >= want
        print(f"callwatch is {got:.1f}x cheaper than {name} ({verdict} the {want}x target)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
