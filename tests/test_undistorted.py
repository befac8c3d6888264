"""Profiled requests do not distort the response times callwatch reports (issue 13).

A profiled request runs several times slower; its time must not reach the handler's
percentiles, max, mean or watched-call times, while its request, error and calls count.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

import pytest

import callwatch
from callwatch import _core
from callwatch.aggregate import ERROR, PROFILED, Collector, HandlerStats, Registry

REQUESTS = 4000  # per mode
BLOCKS = 20  # per mode, interleaved: profiled and unprofiled blocks share the machine's noise


def tiny(i: int) -> int:
    return i + 1


@callwatch.watch
def watched(n: int) -> int:
    return n


def cpu_bound() -> int:
    # Many small Python calls: each one costs the profiler an event, so a profiled
    # request runs several times slower than an unprofiled one.
    total = 0
    for i in range(600):
        total += tiny(i)
    return watched(total) + watched(1)


@pytest.fixture
def cpu_clock() -> Iterator[None]:
    """A real clock that does not count the time this thread waits for a CPU: on two
    loaded cores, preemption spreads the wall-clock p99 far more than the profiler's
    cost, which is CPU time."""
    saved = _core._now
    _core.set_clock(time.thread_time_ns)
    try:
        yield
    finally:
        _core.set_clock(saved)


def run_block(profile: dict[str, Any] | None, n: int) -> HandlerStats:
    cfg: dict[str, Any] = {"profile": profile} if profile is not None else {}
    callwatch.configure(cfg, start_thread=False, strict=True)
    try:
        handler = callwatch.handler("cpu")(cpu_bound)
        for _ in range(n):
            handler()
        return _core.collector.swap(0).handlers["cpu"]
    finally:
        callwatch.shutdown()
        _core.collector.reset()


def test_a_profiled_handler_reports_the_p99_of_unprofiled_requests(cpu_clock: None) -> None:
    """rate 0.02 (the budget off, so the rate stays): 2 % of the requests run several
    times slower, so before the fix the p99 was one of theirs (issue 13), several times
    the unprofiled run's.  Now it is within the sketch's 1 % of the unprofiled run's, up
    to the noise of a loaded machine (the bound: 1.3x)."""
    off, on = HandlerStats(), HandlerStats()
    per_block = REQUESTS // BLOCKS
    p50_ratios = []
    for _ in range(BLOCKS):
        block_off = run_block(None, per_block)
        block_on = run_block({"rate": 0.02, "min_interval": 0, "budget": 1.0}, per_block)
        p50_ratios.append(block_on.quantile_ns(0.5) / block_off.quantile_ns(0.5))
        off.merge(block_off)
        on.merge(block_on)
    assert off.requests == on.requests == REQUESTS  # every request counted
    assert on.funcs and all(fs.calls == 2 * REQUESTS for fs in on.funcs.values())  # every call too
    p99_off, p99_on = off.quantile_ns(0.99), on.quantile_ns(0.99)
    assert p99_on < 1.3 * p99_off, (p99_on, p99_off)
    # The p50 block by block, against the block right before: on this VM the request
    # times can come in two clusters, by a machine state that holds for seconds, and the
    # p50 of a whole run then flips between them while the mean barely moves (a CI
    # failure); adjacent blocks share the state.
    p50_ratio = sorted(p50_ratios)[len(p50_ratios) // 2]
    assert p50_ratio < 1.3, p50_ratios
    mean_off, mean_on = off.ns / off.requests, on.ns / on.requests
    assert mean_on < 1.3 * mean_off, (mean_on, mean_off)


def test_profiled_requests_are_flagged_by_the_decorator_and_by_blocks() -> None:
    """Read before the swap settles them: the table holds the profiled requests apart."""
    callwatch.configure({"profile": {"rate": 1.0, "min_interval": 0, "budget": 1.0}}, start_thread=False, strict=True)
    try:
        callwatch.handler("h")(cpu_bound)()
        with callwatch.request("r"):
            cpu_bound()
        with pytest.raises(ValueError):
            with callwatch.request("e"):
                raise ValueError
        _core.collector.fold()
        table = _core.collector._intervals.table
        got = {h: (hs.requests, hs.errors, len(hs.profiled), hs.sketch.count) for h, hs in table.items()}
        assert got == {"h": (1, 0, 1, 0), "r": (1, 0, 1, 0), "e": (1, 1, 1, 0)}
    finally:
        callwatch.shutdown()
        _core.collector.reset()
    callwatch.configure({}, start_thread=False, strict=True)
    try:
        callwatch.handler("plain")(cpu_bound)()
        _core.collector.fold()
        hs = _core.collector._intervals.table["plain"]
        assert (hs.requests, hs.profiled, hs.sketch.count) == (1, [], 1)
    finally:
        callwatch.shutdown()
        _core.collector.reset()


def test_settle_imputes_the_unprofiled_mean_to_profiled_requests() -> None:
    """Unit test of the collector: 3 unprofiled requests (10, 20, 30 ns, a watched call of
    3 ns each) and one profiled (100 ns, its watched call 9 ns, an error)."""
    reg = Registry()
    a = reg.function("a", None).index
    col = Collector(reg)
    for ns in (10, 20, 30):
        col.record("h", ns, 0, {-2: 0, -3: 0, a: [1, 3, 0]})
    col.record("h", 100, PROFILED | ERROR, {-2: 0, -3: 0, a: [2, 9, 0]})
    hs = col.swap(1).handlers["h"]
    assert (hs.requests, hs.errors) == (4, 1)
    assert (hs.ns, hs.ns_max) == (60 + 20, 30)  # the profiled one counts as the mean, 20
    assert hs.quantile_ns(1.0) <= 30 and hs.sketch.count == 3
    fs = hs.funcs[a]
    assert (fs.calls, fs.calls_max, fs.ns, fs.ns_max) == (5, 2, 9 + 3, 3)
    assert (fs.profiled_ns, fs.profiled_max, hs.profiled) == (0, 0, [])


def test_an_interval_of_profiled_requests_only_reports_their_times() -> None:
    """A rare handler that min_interval profiles each time: its own times are the only
    ones measured, so they are reported."""
    reg = Registry()
    a = reg.function("a", None).index
    col = Collector(reg)
    col.record("rare", 100, PROFILED, {-2: 0, -3: 0, a: [1, 9, 0]})
    col.record("rare", 300, PROFILED, {-2: 0, -3: 0, a: [1, 7, 0]})
    hs = col.swap(1).handlers["rare"]
    assert (hs.requests, hs.ns, hs.ns_max, hs.sketch.count) == (2, 400, 300, 2)
    assert (hs.funcs[a].ns, hs.funcs[a].ns_max, hs.funcs[a].calls) == (16, 9, 2)
