"""Aggregation: what a request's raw numbers add up to, per handler, per interval.

This module knows nothing about wrapping or about Graphite.  The hot path (``_core``) hands
it, once per request, the request's *state*: a flat list of ints in which watched entry
``k`` owns three slots::

    state[3*k]      calls of entry k during the request
    state[3*k + 1]  nanoseconds spent in entry k (outermost calls only)
    state[3*k + 2]  "active" flag / depth, used by the wrappers to skip re-entries

An entry is either a watched function or a group (``db``, ``redis``...).  A group's calls
are the sum of its members' calls, computed here; its time is measured by the wrappers so
that a member nested in another member of the same group is not counted twice.

The flusher calls :meth:`Collector.swap`, which replaces the current table with an empty
one under a short lock and returns the old one as a :class:`Snapshot`; formatting happens
outside the lock.
"""

from __future__ import annotations

import fnmatch
import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from itertools import repeat, zip_longest
from typing import Any, Callable, Iterable, Mapping, Tuple, Union

from ddsketch import DDSketch
from ddsketch.mapping import LogarithmicMapping

__all__ = [
    "BACKGROUND",
    "OVERFLOW",
    "Collector",
    "Entry",
    "FuncStats",
    "HandlerStats",
    "Registry",
    "Snapshot",
]

#: Handler name for watched calls made outside any handler (cron jobs, startup code...).
BACKGROUND = "_background"
#: Handler name that collects requests once ``handlers.max_handlers`` names are in use.
OVERFLOW = "_other"

#: Dimension values beyond ``max_dimension_values`` per handler and dimension.
OTHER_VALUE = "_other"
HEADER = "__request__"

#: A handler's table key: its name, or (name, dimension, value) for a split by dimension.
HandlerKey = Union[str, Tuple[str, str, str]]

#: Relative accuracy of the response-time percentiles (DDSketch guarantee: 1 %).
SKETCH_ACCURACY = 0.01

#: Finished requests are added to the table this many at a time (see Collector.record).
FOLD_BATCH = 256


@dataclass(frozen=True)
class Entry:
    """One watched function (``group_index`` is its group's entry, or -1) or one group."""

    index: int
    name: str
    group: str | None
    is_group: bool
    group_index: int = -1


class Registry:
    """Watched entries and their slots in the per-request state.

    Entries are keyed by (name, group) and never removed, so watching the same function
    again after ``shutdown()``/``configure()`` reuses its slots and the state stays small.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Entry 0 is the request's header, not a function: state[0] holds the request's
        # dimensions (a dict, or 0) and state[1] a handler name set during the request
        # (callwatch.name_request), or 0.
        self.entries: list[Entry] = [Entry(0, HEADER, None, False, -3)]
        self._by_key: dict[tuple[str, str | None, bool], Entry] = {}
        #: len(state) that a new request allocates: 3 slots per entry.
        self.width = 3
        #: entry index -> its group's entry index (-1: no group; -2: is a group; -3: header).
        self.group_of: list[int] = [-3]

    def group(self, name: str) -> Entry:
        return self._add(name, None, is_group=True, group_index=-1)

    def function(self, name: str, group: str | None) -> Entry:
        # The group is registered first, so its slots come before the function's: a
        # state long enough for the function is long enough for its group.
        gi = self.group(group).index if group else -1
        return self._add(name, group, is_group=False, group_index=gi)

    def _add(self, name: str, group: str | None, *, is_group: bool, group_index: int) -> Entry:
        key = (name, group, is_group)
        with self._lock:
            entry = self._by_key.get(key)
            if entry is None:
                entry = Entry(len(self.entries), name, group, is_group, group_index)
                self.entries.append(entry)
                self.group_of.append(-2 if is_group else group_index)
                self._by_key[key] = entry
                self.width = 3 * len(self.entries)
            return entry

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    def grow(self, state: list[int]) -> int:
        """Extend a request's state that was allocated before newer entries existed."""
        missing = self.width - len(state)
        if missing > 0:
            state.extend([0] * missing)
        return 0


@dataclass
class FuncStats:
    """Per handler, per watched function or group, over one interval."""

    calls: int = 0
    calls_max: int = 0  # most calls in one request
    ns: int = 0
    ns_max: int = 0  # most time in one request

    def merge(self, other: FuncStats) -> None:
        self.calls += other.calls
        self.calls_max = max(self.calls_max, other.calls_max)
        self.ns += other.ns
        self.ns_max = max(self.ns_max, other.ns_max)


@dataclass
class HandlerStats:
    """One handler over one interval."""

    requests: int = 0
    errors: int = 0
    ns: int = 0  # response time, summed
    ns_max: int = 0
    sketch: DDSketch = field(default_factory=lambda: DDSketch(SKETCH_ACCURACY))
    funcs: dict[int, FuncStats] = field(default_factory=dict)

    def merge(self, other: HandlerStats) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.ns += other.ns
        self.ns_max = max(self.ns_max, other.ns_max)
        if other.sketch.count:
            self.sketch.merge(other.sketch)
        for k, fs in other.funcs.items():
            mine = self.funcs.get(k)
            if mine is None:
                mine = self.funcs[k] = FuncStats()
            mine.merge(fs)

    def quantile_ns(self, q: float) -> float:
        value = self.sketch.get_quantile_value(q)
        return 0.0 if value is None else float(value)


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


class Collector:
    """The per-interval table that every finished request is added to.

    ``record`` runs once per request and only appends; ``fold`` adds pending requests in
    batches under a short lock that is never held during I/O;
    ``swap`` hands the filled table to the flusher and starts an empty one.
    """

    def __init__(self, registry: Registry, max_handlers: int = 200, max_dimension_values: int = 20) -> None:
        self.registry = registry
        self.max_handlers = max_handlers
        self.max_dimension_values = max_dimension_values
        self._dim_values: dict[tuple[str, str], set[str]] = {}
        self._profiles: dict[str, ProfileStats] = {}
        self._profile_chosen: dict[str, dict[str, int]] = {}
        self._profile_round = 0
        #: profiled functions reported per handler (profile.top)
        self.profile_top = 10
        #: patterns of ``mode: sampled`` watch entries: matching profiled functions are
        #: always reported
        self.profile_patterns: tuple[str, ...] = ()
        self._lock = threading.Lock()
        #: Finished requests not yet in the table: (handler, ns, error, state).  Always
        #: the same list object (the hot path holds its ``append``).
        self.pending: list[tuple[str, int, int, list[Any]]] = []
        self._table: dict[HandlerKey, HandlerStats] = {}
        self.start: float | None = None
        self._admitted: set[str] = set()
        # Handler -> entries it ever called: later intervals report zeros for them, so
        # a count that drops to 0 shows as 0 rather than as a gap.
        self._seen: dict[HandlerKey, set[int]] = {}
        #: Requests whose numbers could not be recorded (a bug in callwatch; counted
        #: rather than raised into the application).
        self.internal_errors = 0

    # -- hot side: once per request -------------------------------------------------

    def record(self, handler: str, ns: int, error: int, state: list[Any]) -> None:
        """Add one finished request (``ns < 0``: a background call, no response time).

        Only an append: requests are added to the table in batches (:meth:`fold`), by the
        request that fills a batch or by the flusher before each swap.  Measured around
        real I/O, adding each request on its own cost ~12 us of CPU (code and data cold
        after the request's syscalls) against well under 1 us per request in a batch.
        """
        p = self.pending
        p.append((handler, ns, error, state))
        if len(p) >= FOLD_BATCH:
            self.fold()

    def fold(self) -> None:
        """Add the pending requests to the current interval's table, unless a fold is
        already under way (on another thread, or on this one: a finalizer or a signal
        handler that calls a watched function runs in the middle of a fold).  What is
        left pending is added by the next fold or swap, so nothing is lost and no thread
        ever waits here for a lock it holds itself."""
        lock = self._lock
        if lock.acquire(blocking=False):
            try:
                self._fold_locked()
            finally:
                lock.release()

    def _fold_locked(self) -> None:
        p = self.pending
        batch = p[:]
        # Other threads may append meanwhile (always at the end): drop what was taken.
        del p[: len(batch)]
        # Per request only sorting by handler; the numbers are then added per handler (and
        # per dimension value) and per column of the requests' states, with C-level
        # sum/max/zip.
        by_handler: dict[str, list[tuple[str, int, int, list[Any]]]] = {}
        for item in batch:
            state = item[3]
            if type(state) is not list or len(state) < 3:
                self.internal_errors += 1
                continue
            key = state[1] or item[0]
            items = by_handler.get(key)
            if items is None:
                by_handler[key] = [item]
            else:
                items.append(item)
        for handler, items in by_handler.items():
            try:
                self._add_requests(handler, items)
            except Exception:
                self.internal_errors += len(items)

    def _add_requests(self, handler: str, items: list[tuple[str, int, int, list[Any]]]) -> None:
        # Called under the lock: requests of one handler; those with dimensions are also
        # added to their split tables, keyed by the handler name as admitted.
        hs = self._table.get(handler)
        if hs is None:
            hs, handler = self._new_handler(handler)
        group_of = self.registry.group_of
        _add_batch(hs, items, group_of)
        splits: dict[tuple[str, str, str], list[tuple[str, int, int, list[Any]]]] = {}
        for item in items:
            dims = item[3][0]
            if dims:
                for key, value in dims.items():
                    splits.setdefault((handler, key, value), []).append(item)
        for dk, its in splits.items():
            ds = self._table.get(dk)
            if ds is None:
                ds = self._new_split(dk)
            _add_batch(ds, its, group_of)

    def _new_handler(self, handler: str) -> tuple[HandlerStats, str]:
        # Called under the lock.  Caps the number of distinct handler names.
        if handler not in self._admitted and handler != BACKGROUND:
            if len(self._admitted) >= self.max_handlers:
                handler = OVERFLOW
                hs = self._table.get(OVERFLOW)
                if hs is not None:
                    return hs, handler
            else:
                self._admitted.add(handler)
        hs = self._table[handler] = HandlerStats()
        return hs, handler

    def _new_split(self, key: tuple[str, str, str]) -> HandlerStats:
        # Called under the lock.  Caps the values per handler and dimension.
        handler, dim, value = key
        values = self._dim_values.setdefault((handler, dim), set())
        if value not in values:
            if len(values) >= self.max_dimension_values:
                key = (handler, dim, OTHER_VALUE)
                hs = self._table.get(key)
                if hs is not None:
                    return hs
            else:
                values.add(value)
        hs = self._table[key] = HandlerStats()
        return hs

    def record_profile(self, handler: str, ns: int, rows: Any) -> None:
        """Add one profiled request: rows of (label, calls, own_ns, cum_ns)."""
        try:
            with self._lock:
                ps = self._profiles.get(handler)
                if ps is None:
                    if len(self._profiles) >= self.max_handlers:
                        return
                    ps = self._profiles[handler] = ProfileStats()
                ps.requests += 1
                ps.ns += ns
                funcs = ps.funcs
                for label, calls, own, cum in rows:
                    f = funcs.get(label)
                    if f is None:
                        funcs[label] = [calls, own, cum]
                    else:
                        f[0] += calls
                        f[1] += own
                        f[2] += cum
        except Exception:
            self.internal_errors += 1

    # -- flusher side --------------------------------------------------------------

    def set_start(self, start: float) -> None:
        with self._lock:
            self.start = start

    def swap(self, end: float) -> Snapshot:
        """Return what was measured since the last swap and start a new interval at ``end``."""
        with self._lock:
            self._fold_locked()
            table, self._table = self._table, {}
            profiles, self._profiles = self._profiles, {}
            start, self.start = self.start, end
        snap = self._snapshot(table, end if start is None else start, end)
        snap.profiles = profiles
        snap.profile_top = self._select_profile_top(profiles)
        return snap

    def _select_profile_top(self, profiles: dict[str, ProfileStats]) -> dict[str, list[str]]:
        # The top functions by cumulative time, plus those chosen in the last few intervals
        # that are still there (so a series does not flicker in and out), at most 2 x top.
        top = self.profile_top
        keep_for = 6
        self._profile_round += 1
        out: dict[str, list[str]] = {}
        for handler, ps in profiles.items():
            chosen = self._profile_chosen.setdefault(handler, {})
            ranked = sorted(ps.funcs, key=lambda lb: -ps.funcs[lb][2])
            for label in ranked[:top]:
                chosen[label] = self._profile_round
            for label, when in list(chosen.items()):
                if self._profile_round - when > keep_for:
                    del chosen[label]
            picked = [lb for lb in ranked if lb in chosen][: 2 * top]
            if self.profile_patterns:
                picked += [lb for lb in ranked if lb not in chosen
                           and any(fnmatch.fnmatchcase(lb, pat) for pat in self.profile_patterns)][:top]
            out[handler] = picked
        return out

    def restore(self, snap: Snapshot) -> None:
        """Merge a snapshot back into the current table (same interval continues)."""
        with self._lock:
            for name, hs in snap.handlers.items():
                mine = self._table.get(name)
                if mine is None:
                    mine = self._table[name] = HandlerStats()
                mine.merge(hs)
            self.start = snap.start

    def after_fork_in_child(self) -> None:
        """A forked child starts empty, with a new lock (the parent's may be held)."""
        self._lock = threading.Lock()
        self.pending.clear()  # the parent's requests, already counted by the parent
        self._table = {}
        self._admitted = set()
        self._dim_values = {}
        self._seen = {}
        self._profiles = {}

    def reset(self) -> None:
        """Forget everything: tables, admitted handler names, seen functions."""
        with self._lock:
            self.pending.clear()
            self._table = {}
            self.start = None
            self._admitted.clear()
            self._dim_values.clear()
            self._seen.clear()
            self._profiles = {}
            self._profile_chosen.clear()

    def _snapshot(self, table: dict[HandlerKey, HandlerStats], start: float, end: float) -> Snapshot:
        for name, hs in table.items():
            seen = self._seen.setdefault(name, set())
            seen.update(hs.funcs)
        for name, seen in self._seen.items():
            stats = table.get(name)
            if stats is None:
                stats = table[name] = HandlerStats()
            for k in seen:
                if k not in stats.funcs:
                    stats.funcs[k] = FuncStats()
        return Snapshot(start, end, table, tuple(self.registry.entries))


def _add_column(funcs: dict[int, FuncStats], k: int, calls: tuple[Any, ...], ns: tuple[Any, ...]) -> None:
    """Add entry ``k``'s calls and time over a batch of requests (one value per request)."""
    fs = funcs.get(k)
    if fs is None:
        fs = funcs[k] = FuncStats()
    fs.calls += sum(calls)
    m = max(calls)
    if m > fs.calls_max:
        fs.calls_max = m
    if min(ns) < 0:  # a state read while an async call was still running: count 0 for it
        ns = tuple([t if t > 0 else 0 for t in ns])
    fs.ns += sum(ns)
    m = max(ns)
    if m > fs.ns_max:
        fs.ns_max = m


def sketch_add_many(sketch: DDSketch, values: list[int]) -> None:
    """``sketch.add(v)`` for each of ``values`` (ints >= 0), with the same bins.

    DDSketch.add costs ~0.5 us a value in Python; here the keys are computed with C-level
    ``map`` over the very expression LogarithmicMapping.key uses
    (``ceil(log(v, 2) * multiplier) + offset``), then counted, then added per bin.
    """
    mapping = sketch._mapping
    if type(mapping) is not LogarithmicMapping or not values or min(values) < 0:
        for v in values:
            sketch.add(v)
        return
    low = mapping.min_possible
    positive = [v for v in values if v > low]
    keys: Iterable[int] = map(math.ceil, map(mapping._multiplier.__rmul__, map(math.log, positive, repeat(2))))
    offset = mapping._offset
    if offset:
        keys = (int(k + offset) for k in keys)
    store_add = sketch._store.add
    for key, n in Counter(keys).items():
        store_add(key, float(n))
    zeros = len(values) - len(positive)
    if zeros:
        sketch._zero_count += float(zeros)
    sketch._count += float(len(values))
    sketch._sum += float(sum(values))
    lo, hi = min(values), max(values)
    if lo < sketch._min:
        sketch._min = lo
    if hi > sketch._max:
        sketch._max = hi


def _add_batch(hs: HandlerStats, items: list[tuple[str, int, int, list[Any]]], group_of: list[int]) -> None:
    """Add finished requests ``(handler, ns, error, state)`` to one handler's table."""
    timed = [it for it in items if it[1] >= 0]  # not background calls
    if timed:
        ns = [it[1] for it in timed]
        hs.requests += len(ns)
        hs.errors += sum([it[2] for it in timed])
        hs.ns += sum(ns)
        m = max(ns)
        if m > hs.ns_max:
            hs.ns_max = m
        sketch_add_many(hs.sketch, ns)
    # cols[3k], cols[3k+1]: entry k's calls and ns, one value per request
    cols = list(zip_longest(*[it[3] for it in items], fillvalue=0))
    funcs = hs.funcs
    members: dict[int, list[tuple[Any, ...]]] = {}
    for k in range(1, min(len(cols) // 3, len(group_of))):
        g = group_of[k]
        if g == -2:  # a group: its calls are its members', below; its time is its own
            continue
        calls = cols[3 * k]
        if any(calls):
            _add_column(funcs, k, calls, cols[3 * k + 1])
            if g >= 0:
                members.setdefault(g, []).append(calls)
    for g, cs in members.items():
        calls = cs[0] if len(cs) == 1 else tuple(map(sum, zip(*cs)))  # per request
        _add_column(funcs, g, calls, cols[3 * g + 1])


def sketch_to_json(sketch: DDSketch) -> dict[str, Any]:
    """The sketch's bins as plain data (for handing an interval to another process)."""
    store = sketch._store  # DenseStore: public ``bins`` and ``offset``
    bins = [[store.offset + i, c] for i, c in enumerate(store.bins) if c]
    return {"bins": bins, "zero": sketch._zero_count}


def sketch_from_json(data: Mapping[str, Any]) -> DDSketch:
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
            funcs.append([e.name, e.group, e.is_group, fs.calls, fs.calls_max, fs.ns, fs.ns_max])
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
        for ename, group, is_group, calls, calls_max, ns, ns_max in h["funcs"]:
            e = registry.group(ename) if is_group else registry.function(ename, group)
            hs.funcs[e.index] = FuncStats(int(calls), int(calls_max), int(ns), int(ns_max))
        parts = str(name).split("\x00")
        handlers[(parts[0], parts[1], parts[2]) if len(parts) == 3 else parts[0]] = hs
    return Snapshot(float(data["start"]), float(data["end"]), handlers, tuple(registry.entries))


def share(part_ns: int, whole_ns: int) -> float:
    """Percent of ``whole_ns`` spent in ``part_ns`` (0 when there is no whole)."""
    return 100.0 * part_ns / whole_ns if whole_ns > 0 else 0.0


SnapshotSink = Callable[[Snapshot], None]
