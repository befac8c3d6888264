"""What an interval's numbers are made of: the watched entries, per-handler statistics,
snapshots, and the response-time sketch (with its plain-data form for other processes).

No logic of adding requests lives here (see ``_table``); these are the types that the
interval table fills, the exporter reads and the worker hand-off serialises.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Iterable, Mapping, Tuple, Union

from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

from ._state import speedups

_c_sketch_keys = speedups.sketch_keys if speedups is not None else None

#: Handler name for watched calls made outside any handler (cron jobs, startup code...).
BACKGROUND = "_background"
#: Handler name that collects requests once ``handlers.max_handlers`` names are in use.
OVERFLOW = "_other"
#: Dimension values beyond ``max_dimension_values`` per handler and dimension.
OTHER_VALUE = "_other"
HEADER = "__request__"
#: The group part of a runtime entry's registry key: no watched entry's group can be it.
RUNTIME = "\x00runtime"
#: Runtime entries (``callwatch.memory``): the collections during a request (count, pause
#: ns); those outside any; and per generation, every collection (count 1, its pause) and
#: the objects it collected and found uncollectable (count).
GC = "gc"
GC_OUTSIDE = "gc_outside"
GC_GENERATIONS = tuple((f"gc_gen{g}", f"gc_gen{g}_collected", f"gc_gen{g}_uncollectable") for g in range(3))

HandlerKey = Union[str, Tuple[str, str, str]]
"""A handler's table key: its name, or (name, dimension, value) for a split by dimension."""

#: Relative accuracy of the response-time percentiles (DDSketch guarantee: 1 %).
SKETCH_ACCURACY = 0.01


@dataclass(frozen=True)
class Entry:
    """One watched function (``group_index`` is its group's entry, or -1) or one group; or
    (``runtime``) a count callwatch keeps itself, such as garbage collections
    (``callwatch.memory``): its records are written by callwatch, not by a wrapper."""

    index: int
    name: str
    group: str | None
    is_group: bool
    group_index: int = -1
    runtime: bool = False


class Registry:
    """The watched entries: each gets an index, its key in every request's state.

    Entries are keyed by (name, group) and never removed, so watching the same function
    again after ``shutdown()``/``configure()`` reuses its entry.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Entry 0 stands for the request itself (its header), never for a function.
        self.entries: list[Entry] = [Entry(0, HEADER, None, False, -3)]
        self._by_key: dict[tuple[str, str | None, bool], Entry] = {}  # (name, group or RUNTIME, is group)
        #: entry index -> its group's entry index (-1: no group; -2: is a group; -3: header).
        self.group_of: list[int] = [-3]

    def group(self, name: str) -> Entry:
        """The entry of the group ``name``, added on first use."""
        return self._add(name, None, is_group=True, group_index=-1)

    def function(self, name: str, group: str | None) -> Entry:
        """The entry of the watched function ``name`` in ``group`` (added with its group's
        entry on first use)."""
        gi = self.group(group).index if group else -1
        return self._add(name, group, is_group=False, group_index=gi)

    def runtime(self, name: str) -> Entry:
        """A count of callwatch's own (``Entry.runtime``), apart from any watched name."""
        return self._add(name, None, is_group=False, group_index=-1, runtime=True)

    def _add(self, name: str, group: str | None, *, is_group: bool, group_index: int,
             runtime: bool = False) -> Entry:
        key = (name, RUNTIME if runtime else group, is_group)
        with self._lock:
            entry = self._by_key.get(key)
            if entry is None:
                entry = Entry(len(self.entries), name, group, is_group, group_index, runtime)
                # group_of first: a state may name the entry as soon as it is in entries
                self.group_of.append(-2 if is_group else group_index)
                self.entries.append(entry)
                self._by_key[key] = entry
            return entry

    def after_fork_in_child(self) -> None:
        """A new lock (the parent's may be held); the entries stay."""
        self._lock = threading.Lock()


@dataclass
class FuncStats:
    """Per handler, per watched function or group, over one interval."""

    calls: int = 0
    calls_max: int = 0  # most calls in one request
    ns: int = 0
    ns_max: int = 0  # most time in one request
    #: time in profiled requests, until ``HandlerStats.settle``
    profiled_ns: int = 0
    profiled_max: int = 0

    def merge(self, other: FuncStats) -> None:
        """Add ``other``'s numbers to these (sums added, maxima kept)."""
        self.calls += other.calls
        self.calls_max = max(self.calls_max, other.calls_max)
        self.ns += other.ns
        self.ns_max = max(self.ns_max, other.ns_max)
        self.profiled_ns += other.profiled_ns
        self.profiled_max = max(self.profiled_max, other.profiled_max)


@dataclass
class HandlerStats:
    """One handler over one interval.

    Profiled requests (one in ``1/rate``) run slower because they are profiled, so until
    the swap their response times wait in ``profiled`` and their watched calls' time in
    each ``FuncStats.profiled_ns``; ``settle`` then decides what they count for.  Every
    request counts in ``requests`` and ``errors``, and every call in ``calls``.
    """

    requests: int = 0
    errors: int = 0
    ns: int = 0  # response time, summed
    ns_max: int = 0
    sketch: DDSketch = field(default_factory=lambda: DDSketch(SKETCH_ACCURACY))
    funcs: dict[int, FuncStats] = field(default_factory=dict)
    #: response times of the profiled requests among ``requests``, until ``settle``
    profiled: list[int] = field(default_factory=list)

    def merge(self, other: HandlerStats) -> None:
        """Add ``other``'s requests, response times and watched calls to these."""
        self.requests += other.requests
        self.errors += other.errors
        self.ns += other.ns
        self.ns_max = max(self.ns_max, other.ns_max)
        self.profiled += other.profiled
        if other.sketch.count:
            self.sketch.merge(other.sketch)
        for k, fs in other.funcs.items():
            mine = self.funcs.get(k)
            if mine is None:
                mine = self.funcs[k] = FuncStats()
            mine.merge(fs)

    def settle(self) -> None:
        """Account for the profiled requests, once, when the interval's table is taken.

        The percentiles and the max are those of the unprofiled requests: a profiled
        request's time says how fast the profiler is, not the handler.  The time sums
        (``ns``, each watched call's ``ns``) are scaled from the unprofiled requests to
        all of them, as if each profiled request had taken their mean: so the mean
        response time, the ms per request and the share, all divided by ``requests``,
        stay those of the unprofiled requests while calls per request counts every call.
        The profiled requests are a random sample (the countdown), so that mean stands
        for them.  Only when every request of the interval was profiled (a rare handler
        that ``min_interval`` picks each time) are their own, inflated, times reported:
        they are the only ones measured.
        """
        times = self.profiled
        if not times:
            return
        self.profiled = []
        unprofiled = self.requests - len(times)
        if unprofiled > 0:
            n = len(times)
            self.ns += self.ns * n // unprofiled
            for fs in self.funcs.values():
                fs.ns += fs.ns * n // unprofiled
        else:
            sketch_add_many(self.sketch, times)
            self.ns += sum(times)
            self.ns_max = max(self.ns_max, *times)
            for fs in self.funcs.values():
                fs.ns += fs.profiled_ns
                fs.ns_max = max(fs.ns_max, fs.profiled_max)
        for fs in self.funcs.values():
            fs.profiled_ns = fs.profiled_max = 0

    def quantile_ns(self, q: float) -> float:
        """The ``q`` quantile of the response times, within the interval's [min, max]:
        the sketch answers with its bin's value (up to 1 % off), which for one request
        could otherwise exceed the max reported beside it."""
        value = self.sketch.get_quantile_value(q)
        if value is None:
            return 0.0
        return float(min(max(value, self.sketch._min), self.sketch._max))


@dataclass
class ProfileStats:
    """The profiled requests of one handler over one interval, summed per function."""

    requests: int = 0
    ns: int = 0  # their response time
    funcs: dict[str, list[int]] = field(default_factory=dict)  # label -> [calls, own_ns, cum_ns]


@dataclass
class Snapshot:
    """Everything measured in ``[start, end)`` (wall-clock seconds)."""

    start: float
    end: float
    handlers: dict[HandlerKey, HandlerStats]
    entries: tuple[Entry, ...]
    profiles: dict[str, ProfileStats] = field(default_factory=dict)
    #: per handler, the profiled functions to report (a stable, bounded set)
    profile_top: dict[str, list[str]] = field(default_factory=dict)
    #: (handler, entry name, is group) -> calls per request / baseline, while spiking
    spikes: dict[tuple[str, str, bool], float] = field(default_factory=dict)
    #: the process's memory at the end of the interval (``callwatch.memory``): name -> value
    gauges: dict[str, float] = field(default_factory=dict)


def sketch_add_many(sketch: DDSketch, values: list[int]) -> None:
    """``sketch.add(v)`` for each of ``values`` (ints >= 0), with the same bins.

    DDSketch.add is a Python call per value (benchmarks/in_situ.py times the fold); here the
    keys are computed over all values at once with the very operations
    LogarithmicMapping.key does (``ceil(log(v, 2) * multiplier) + offset``): by the C
    extension's ``sketch_keys`` when built, else with C-level ``map``; then counted, then
    added per bin.
    """
    mapping = sketch._mapping
    if type(mapping) is not LogarithmicMapping or not values or min(values) < 0:
        for v in values:
            sketch.add(v)
        return
    counted, zeros = _sketch_keys(values, mapping)
    store_add = sketch._store.add
    for key, n in counted.items():
        store_add(key, float(n))
    if zeros:
        sketch._zero_count += float(zeros)
    sketch._count += float(len(values))
    sketch._sum += float(sum(values))
    lo, hi = min(values), max(values)
    if lo < sketch._min:
        sketch._min = lo
    if hi > sketch._max:
        sketch._max = hi


def _sketch_keys(values: list[int], mapping: LogarithmicMapping) -> tuple[Mapping[int, int], int]:
    """({bin key: values in it}, zeros) for ``values`` (ints >= 0)."""
    if _c_sketch_keys is not None and type(values) is list:
        try:
            return _c_sketch_keys(values, mapping._multiplier, mapping._offset)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError):
            pass  # not all small ints: the same in Python
    low = mapping.min_possible
    positive = [v for v in values if v > low]
    keys: Iterable[int] = map(math.ceil, map(mapping._multiplier.__rmul__, map(math.log, positive, repeat(2))))
    offset = mapping._offset
    if offset:
        keys = (int(k + offset) for k in keys)
    return Counter(keys), len(values) - len(positive)


def sketch_to_json(sketch: DDSketch) -> dict[str, Any]:
    """The sketch's bins as plain data (for handing an interval to another process)."""
    store = sketch._store  # DenseStore: public ``bins`` and ``offset``
    bins = [[store.offset + i, c] for i, c in enumerate(store.bins) if c]
    return {"bins": bins, "zero": sketch._zero_count}


def sketch_from_json(data: Mapping[str, Any]) -> DDSketch:
    """The sketch :func:`sketch_to_json` wrote: each bin's count added at the bin's own value,
    so every value lands in the bin it came from."""
    sketch = DDSketch(SKETCH_ACCURACY)
    mapping = LogarithmicMapping(SKETCH_ACCURACY)
    for key, count in data.get("bins", ()):
        sketch.add(mapping.value(int(key)), float(count))  # the bin's own value: same bin
    if data.get("zero"):
        sketch.add(0.0, float(data["zero"]))
    return sketch


def snapshot_to_json(snap: Snapshot) -> dict[str, Any]:
    """A snapshot keyed by entry *names*, not this process's entry indices."""
    handlers = {}
    for name, hs in snap.handlers.items():
        funcs = []
        for k, fs in hs.funcs.items():
            e = snap.entries[k]
            funcs.append([e.name, e.group, e.is_group, fs.calls, fs.calls_max, fs.ns, fs.ns_max, e.runtime])
        key = name if isinstance(name, str) else "\x00".join(name)
        handlers[key] = {"requests": hs.requests, "errors": hs.errors, "ns": hs.ns, "ns_max": hs.ns_max,
                          "sketch": sketch_to_json(hs.sketch), "funcs": funcs}
    return {"start": snap.start, "end": snap.end, "handlers": handlers}


def snapshot_from_json(data: Mapping[str, Any], registry: Registry) -> Snapshot:
    """Rebuild a snapshot written by another process, mapping names to our entries."""
    handlers: dict[HandlerKey, HandlerStats] = {}
    for name, h in data["handlers"].items():
        hs = HandlerStats(int(h["requests"]), int(h["errors"]), int(h["ns"]), int(h["ns_max"]),
                          sketch_from_json(h["sketch"]))
        for ename, group, is_group, calls, calls_max, ns, ns_max, *runtime in h["funcs"]:
            e = (registry.runtime(ename) if runtime and runtime[0] else registry.group(ename) if is_group
                 else registry.function(ename, group))
            hs.funcs[e.index] = FuncStats(int(calls), int(calls_max), int(ns), int(ns_max))
        parts = str(name).split("\x00")
        handlers[(parts[0], parts[1], parts[2]) if len(parts) == 3 else parts[0]] = hs
    return Snapshot(float(data["start"]), float(data["end"]), handlers, tuple(registry.entries))


def share(part_ns: int, whole_ns: int) -> float:
    """Percent of ``whole_ns`` spent in ``part_ns`` (0 when there is no whole)."""
    return 100.0 * part_ns / whole_ns if whole_ns > 0 else 0.0
