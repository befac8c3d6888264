"""What each of callwatch's features costs, added one at a time, in one run (issue 13).

    python benchmarks/features.py [--rounds 9] [--seconds 2] [--players 7]
    CALLWATCH_PURE_PYTHON=1 python benchmarks/features.py   # the pure-Python watched wrapper

benchmarks/ must be on sys.path (it is when the script is run as above).

The handler is benchmarks/macro.py's (with 7 players: 8 redis round trips over loopback
and 8 sqlite queries per request), its redis-server and its interleaved measurement
(``macro.measure``: the rows take turns request by request, in shuffled order, so the
machine's drift hits every row alike).  Each row adds one feature to the row above it:

  bare             no instrumentation
  @handler         the handler wrapper only
  + 4 watched functions
                   the four data functions watched with ``@callwatch.watch`` (16 calls
                   per request), no group
  + groups         the same functions in the groups redis and db
  + dimension      a dimension ``players`` computed by a function of ours, configured in
                   ``handlers.dimensions``; it gets the handler's own arguments (the app)
  + spikes         the same request path as ``+ dimension``: spike detection runs at
                   flush, in the flush thread, for every handler at once.  spikes.enabled
                   is one switch per process (the detector is a stage of the exporter), so
                   on and off cannot be rows of one run; this row's step is the noise
                   between two identical rows, and the line under the table gives the
                   flush thread's CPU time spent judging spikes, which every row shares
  + profiling (defaults)
                   sampled profiling at its defaults (``profile: {}``), the only row with
                   the profiler on; the profiler's budget clock runs in its turns only
                   (``macro.BUDGET_CLOCK``)
  + spikes, on copies
                   (Python 3.12+, as the next row) ``+ spikes`` calling copies of the four
                   functions (see below), watched with the wrapper: the control of the
                   next row, its step against ``+ spikes`` what fresh copies change
  + spikes, mode: count
                   (Python 3.12+; on 3.11 ``mode: count`` falls back to the wrapper, so no
                   row) ``+ spikes`` with the four functions (other copies) watched by
                   ``mode: count`` (sys.monitoring, calls only) instead of the wrapper; its
                   step is against ``+ spikes, on copies``

callwatch is configured once for the whole run, as a server would be.  What the
configuration makes process-wide, and each row takes for its own turns only: the
dimension functions and the profiler (both read per request from ``callwatch._request``;
installed by the rows that have them).  ``mode: count`` hooks a function's code object,
which every row calling the function would then run through, so that row calls copies of
macro.py's four functions with code objects of their own (``count_get_session`` ...,
watched as ``features:count_get_session``).  Not separable: the batched hand-over of
finished requests to the aggregates (once per ``aggregate.FOLD_BATCH`` requests of any
handler) is paid by the request that fills the batch, whichever callwatch row it is.

The last column shows what callwatch recorded for each row's handler over the run (watched
and group calls per request, dimension values, profiled requests): each row has its
features on and no other.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import types
from typing import Any, Callable, NamedTuple

import callwatch
import macro
from callwatch import _core, _monitor, _request
from macro import BUDGET_CLOCK, App, Rows, make_handler, measure, median, pin, plain, quartiles, start_redis

#: This module as the configuration's targets name it (benchmarks/ is on sys.path).
MODULE = "features"

Wrap = Callable[[Callable[..., Any], str, str], Callable[..., Any]]
Hook = Callable[[], None]


def players(app: App) -> int:
    """The dimension function: called with the handler's own arguments."""
    return app.players


def _clone(fn: Callable[..., Any], prefix: str) -> Callable[..., Any]:
    """``fn`` with a code object of its own (sys.monitoring hooks code objects)."""
    name = prefix + fn.__name__
    code = fn.__code__.replace(co_name=name, co_qualname=name)
    clone = types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    clone.__module__ = MODULE
    return clone


DATA = (macro.get_session, macro.get_profile, macro.load_table, macro.load_player)
#: macro.py's function name -> its copy for the ``mode: count`` row, a global of this module
COUNTED = {f.__name__: _clone(f, "count_") for f in DATA}
globals().update({f.__name__: f for f in COUNTED.values()})
#: ... and for the row that watches copies with the wrapper (the count row's control)
COPIES = {f.__name__: _clone(f, "copy_") for f in DATA}


def _watched(fn: Callable[..., Any], name: str, group: str) -> Callable[..., Any]:
    return callwatch.watch(name=name)(fn)


def _grouped(fn: Callable[..., Any], name: str, group: str) -> Callable[..., Any]:
    return callwatch.watch(name=name, group=group)(fn)


def _copied(fn: Callable[..., Any], name: str, group: str) -> Callable[..., Any]:
    return callwatch.watch(name=name, group=group)(COPIES[fn.__name__])


def _counted(fn: Callable[..., Any], name: str, group: str) -> Callable[..., Any]:
    return COUNTED[fn.__name__]


class Row(NamedTuple):
    label: str
    handler: str | None  # the handler's name; None: not a handler
    wrap: Wrap  # how the data functions are called (macro.make_handler's wrap)
    dims: bool  # the configured dimension on
    profiled: bool
    base: str  # the row this one's step is measured against


def specs() -> list[Row]:
    rows = [Row("bare", None, plain, False, False, "bare"),
            Row("@handler", "f_handler", plain, False, False, "bare"),
            Row("+ 4 watched functions", "f_watched", _watched, False, False, "@handler"),
            Row("+ groups", "f_groups", _grouped, False, False, "+ 4 watched functions"),
            Row("+ dimension", "f_dims", _grouped, True, False, "+ groups"),
            Row("+ spikes", "f_spikes", _grouped, True, False, "+ dimension"),
            Row("+ profiling (defaults)", "f_profiled", _grouped, True, True, "+ spikes")]
    if _monitor.AVAILABLE:
        rows += [Row("+ spikes, on copies", "f_copies", _copied, True, False, "+ spikes"),
                 Row("+ spikes, mode: count", "f_count", _counted, True, False, "+ spikes, on copies")]
    return rows


def watched_groups() -> dict[str, str]:
    """metric name -> group of the data functions, as macro.make_handler names them."""
    seen: dict[str, str] = {}

    def note(fn: Callable[..., Any], name: str, group: str) -> Callable[..., Any]:
        seen[name] = group
        return fn
    make_handler(note)
    return seen


def config(rows: list[Row]) -> dict[str, Any]:
    """The one configuration of the run: macro.py's, plus the dimension and the counted functions."""
    dims = {r.handler: {"players": f"{MODULE}:players"} for r in rows if r.dims}
    counted = [{"target": f"{MODULE}:count_{name}", "name": name, "group": group, "mode": "count"}
               for name, group in watched_groups().items()] if _monitor.AVAILABLE else []
    return {"naming": {"worker": "none"}, "graphite": {"interval": 1}, "profile": {},
            "handlers": {"dimensions": dims}, "watch": counted}


def hooks(row: Row, dims: Any, profiler: Any) -> tuple[Hook, Hook]:
    """The row's set up and tear down: it installs what is process-wide for its turns only."""
    def setup() -> None:
        if row.dims:
            _request.dimension_functions = dims
        if row.profiled:
            _request.profiler = profiler
            BUDGET_CLOCK.start()

    def teardown() -> None:
        if row.profiled:
            BUDGET_CLOCK.stop()
        _request.profiler = None
        _request.dimension_functions = {}
    return setup, teardown


class CpuMeter:
    """This thread's CPU time per row: ``macro.measure`` calls a row's set up and tear down
    right around each of its turns, so the meter reads the clock there, outside the timed
    block.  CPU time is not moved by the wake-up latencies of waiting on redis, which move
    the rates of a shared VM by tens of %."""

    def __init__(self, block: int) -> None:
        self.block = block
        self.ns: collections.Counter[str] = collections.Counter()
        self.turns: collections.Counter[str] = collections.Counter()
        self._since = 0

    def around(self, label: str, setup: Hook, teardown: Hook) -> tuple[Hook, Hook]:
        def start() -> None:
            setup()
            self._since = time.thread_time_ns()

        def stop() -> None:
            self.ns[label] += time.thread_time_ns() - self._since
            self.turns[label] += 1
            teardown()
        return start, stop

    def per_request(self, label: str) -> float:
        """µs of CPU per request of row ``label``."""
        return self.ns[label] / 1e3 / max(self.turns[label] * self.block, 1)


def build(rows: list[Row], meter: CpuMeter) -> Rows:
    """Take the dimension functions and the profiler that configure() installed for every
    handler, and give each row its handler with its set up and tear down."""
    dims, profiler = _request.dimension_functions, _request.profiler
    assert dims and profiler is not None, "callwatch.configure() did not install them"
    _request.dimension_functions, _request.profiler = {}, None
    out: Rows = {}
    for row in rows:
        handler = make_handler(row.wrap)
        if row.handler is not None:
            handler = callwatch.handler(row.handler)(handler)
        out[row.label] = (handler, *meter.around(row.label, *hooks(row, dims, profiler)))
    return out


class Timed:
    """An exporter stage with the CPU time the flush thread spends in it."""

    def __init__(self, stage: Callable[[Any], None]) -> None:
        self.stage = stage
        self.cpu = 0.0
        self.calls = 0

    def __call__(self, snap: Any) -> None:
        t = time.thread_time()
        try:
            self.stage(snap)
        finally:
            self.cpu += time.thread_time() - t
            self.calls += 1


class Recorded:
    """An ``on_snapshot`` sink: what callwatch recorded per handler, summed over the run,
    which shows that each row has its features on and no other."""

    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.calls: collections.Counter[tuple[str, bool]] = collections.Counter()  # (handler, is group)
        self.dims: dict[str, set[str]] = collections.defaultdict(set)
        self.profiled: collections.Counter[str] = collections.Counter()

    def __call__(self, snap: Any) -> None:
        for key, hs in snap.handlers.items():
            if isinstance(key, tuple):  # a dimension's series: (handler, dimension, value)
                self.dims[key[0]].add("=".join(key[1:]))
                continue
            self.requests[key] += hs.requests
            for k, fs in hs.funcs.items():
                self.calls[key, snap.entries[k].is_group] += fs.calls
        for handler, ps in snap.profiles.items():
            self.profiled[handler] += ps.requests

    def describe(self, handler: str | None) -> str:
        if handler is None:
            return "—"
        n = self.requests[handler]
        if not n:
            return "no requests"
        dims = ", ".join(sorted(self.dims[handler])) or "no dimension"
        return (f"{self.calls[handler, False] / n:.1f} watched + {self.calls[handler, True] / n:.1f} group calls "
                f"per request; {dims}; {self.profiled[handler]} of {n:,} profiled")


def time_spikes(rt: Any) -> Timed:
    """Time the spike detector where the exporter calls it."""
    assert rt is not None and rt.spikes is not None, "spike detection is not on"
    timed = Timed(rt.spikes)
    rt.exporter.stages[rt.exporter.stages.index(rt.spikes)] = timed
    return timed


class Outcome(NamedTuple):
    rates: dict[str, list[float]]  # row -> its rate (requests/s) in each round
    spikes: Timed
    recorded: Recorded
    cpu: CpuMeter
    seconds: float  # measured, all rows
    pinned: str


def run(args: argparse.Namespace, rows: list[Row]) -> Outcome:
    sys.modules.setdefault(MODULE, sys.modules[__name__])  # run as a script: the targets' module
    server, port = start_redis()
    pinned = pin(server.pid)
    recorded = Recorded()
    rt = callwatch.configure(config(rows), on_snapshot=recorded, strict=True)
    try:
        spikes = time_spikes(rt)
        app = App(port, args.players)
        cpu = CpuMeter(args.block)
        table = build(rows, cpu)
        t = time.perf_counter()
        rates = measure(app, table, args)
        seconds = time.perf_counter() - t
    finally:
        callwatch.shutdown()  # the last flush: ``recorded`` is complete
        server.terminate()
        server.wait()
    return Outcome(rates, spikes, recorded, cpu, seconds, pinned)


def per_round(rates: dict[str, list[float]], row: str, base: str) -> tuple[list[float], list[float]]:
    """-> per round, sorted: the throughput ``row`` loses against ``base`` (%), and the
    time it adds per request (µs, the difference of 1/rate)."""
    pct = sorted(100 * (1 - r / b) for r, b in zip(rates[row], rates[base]))
    us = sorted(1e6 * (1 / r - 1 / b) for r, b in zip(rates[row], rates[base]))
    return pct, us


def report(args: argparse.Namespace, rows: list[Row], out: Outcome) -> None:
    wrapper = "C" if _core.use_speedups else "pure-Python"
    print(f"Python {sys.version.split()[0]}, callwatch's watched wrapper: {wrapper}; {args.players} players: "
          f"{args.players + 1} redis round trips and {args.players + 1} SQL queries per request; {args.rounds} "
          f"rounds of ~{args.seconds * len(rows):g} s, rows taking turns request by request; {out.pinned}")
    print("| row | requests/s (median) | cost vs bare (median of per-round ratios) | step vs row above: % | "
          "step: µs per request | spread of step (quartiles) | spread of cost (quartiles) | CPU µs per request "
          "(this thread) | CPU step µs | what callwatch recorded |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        cost, _ = per_round(out.rates, row.label, "bare")
        print(f"| {row.label} | {median(out.rates[row.label]):,.0f} | {median(cost):+.1f} % | "
              f"{step_cells(out.rates, rows, row)} | {quartiles(cost)} | {out.cpu.per_request(row.label):.1f} | "
              f"{cpu_step(out.cpu, row)} | {out.recorded.describe(row.handler)} |")
    spikes = out.spikes
    print(f"spike detection (in the flush thread, once per 1-s flush, all rows alike): {1e3 * spikes.cpu:.1f} ms "
          f"CPU in {spikes.calls} flushes ({1e6 * spikes.cpu / max(spikes.calls, 1):.0f} µs per flush), "
          f"{100 * spikes.cpu / out.seconds:.3f} % of the {out.seconds:.0f} s measured, "
          f"{1e6 * spikes.cpu / sum(out.recorded.requests.values()):.2f} µs per request of callwatch's rows")
    print("+ spikes runs the very requests of + dimension: its step is this run's noise between two identical rows")
    if not _monitor.AVAILABLE:
        print("mode: count: no row on this Python (sys.monitoring needs 3.12+; here it falls back to the wrapper)")


def cpu_step(cpu: CpuMeter, row: Row) -> str:
    if row.base == row.label:
        return "—"
    return f"{cpu.per_request(row.label) - cpu.per_request(row.base):+.1f}"


def step_cells(rates: dict[str, list[float]], rows: list[Row], row: Row) -> str:
    """The step columns: % (against which row, when not the one above), µs, spread."""
    if row.base == row.label:
        return "— | — | —"
    step, us = per_round(rates, row.label, row.base)
    above = rows[rows.index(row) - 1].label
    against = "" if row.base == above else f" (vs {row.base})"
    return f"{median(step):+.1f} %{against} | {median(us):+.1f} | {quartiles(step)}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0, help="per row per round")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--players", type=int, default=7)
    ap.add_argument("--block", type=int, default=macro.BLOCK, help="requests per turn")
    args = ap.parse_args(argv)
    rows = specs()
    report(args, rows, run(args, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
