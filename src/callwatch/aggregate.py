"""Aggregation: what requests' raw numbers add up to, per handler, per interval.

This module knows nothing about wrapping or about Graphite.  The hot path (``_core``) hands
the collector, once per request, the request's *state* (its layout: ``_state``).
:class:`Collector` is the small facade the rest of callwatch calls; the jobs behind it:

- ``_table.IntervalTable``: requests added in batches, swapped out per interval,
  zero-filling of what a handler called before, running background states reported;
- ``_profiles.ProfileTable``: profiled requests per function, and the reported top-N;
- ``_limits.Limiter``: the caps on handler names and dimension values, which recover;
- ``_stats``: the types (entries, statistics, snapshots, the response-time sketch).

The flusher calls :meth:`Collector.swap`, which replaces the current table with an empty
one under a short lock and returns the old one as a :class:`Snapshot`; formatting happens
outside the lock.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

from ._limits import Limiter
from ._profiles import ProfileTable
from ._state import State
from ._stats import (BACKGROUND, GC, GC_GENERATIONS, GC_OUTSIDE, HEADER, OTHER_VALUE, OVERFLOW, SKETCH_ACCURACY, Entry, FuncStats, HandlerKey,
                     HandlerStats, ProfileStats, Registry, Snapshot, share, sketch_add_many, sketch_from_json,
                     sketch_to_json, snapshot_from_json, snapshot_to_json)
from ._table import ERROR, PROFILED, IntervalTable, Item

__all__ = [
    "BACKGROUND", "ERROR", "FOLD_BATCH", "GC", "GC_GENERATIONS", "GC_OUTSIDE", "HEADER", "OTHER_VALUE", "OVERFLOW", "PROFILED", "SKETCH_ACCURACY",
    "Collector", "Entry",
    "FuncStats", "HandlerKey", "HandlerStats", "ProfileStats", "Registry", "Snapshot", "share", "sketch_add_many",
    "sketch_from_json", "sketch_to_json", "snapshot_from_json", "snapshot_to_json",
]

#: Finished requests are added to the table this many at a time (see Collector.record).
FOLD_BATCH = 256


class Collector:
    """Where every finished request goes.

    ``record`` runs once per request and only appends; ``fold`` adds pending requests in
    batches under a short lock that is never held during I/O, and never waited for by the
    hot path (see ``fold``); ``swap`` hands the filled table to the flusher.
    """

    def __init__(self, registry: Registry, max_handlers: int = 200, max_dimension_values: int = 20) -> None:
        self.registry = registry
        self._limiter = Limiter(max_handlers, max_dimension_values)
        self._intervals = IntervalTable(self._limiter)
        self._profiles = ProfileTable()
        self._lock = threading.Lock()
        #: Finished requests not yet in the table.  Always the same list object (the hot
        #: path holds its ``append``).
        self.pending: list[Item] = []
        #: Profiled requests not yet in the profile table: (handler, ns, rows).
        self._pending_profiles: list[tuple[str, int, Any]] = []
        self.start: float | None = None
        self._errors = 0
        #: Background states still running, by id (``background_started``); never
        #: rebound, so the hot path may hold it.
        self.live_background = self._intervals.live

    # -- settings, read and set by configure() ------------------------------------------

    @property
    def max_handlers(self) -> int:
        """Handler names with a series of their own (handlers.max_handlers); more count
        under ``_other``."""
        return self._limiter.max_handlers

    @max_handlers.setter
    def max_handlers(self, value: int) -> None:
        """Change the cap on handler names."""
        self._limiter.max_handlers = value

    @property
    def max_dimension_values(self) -> int:
        """Values with a series of their own per handler and dimension
        (handlers.max_dimension_values); more count under ``_other``."""
        return self._limiter.max_dimension_values

    @max_dimension_values.setter
    def max_dimension_values(self, value: int) -> None:
        """Change the cap on values per handler and dimension."""
        self._limiter.max_dimension_values = value

    @property
    def profile_top(self) -> int:
        """Profiled functions reported per handler (profile.top)."""
        return self._profiles.top

    @profile_top.setter
    def profile_top(self, value: int) -> None:
        self._profiles.top = value

    @property
    def profile_patterns(self) -> tuple[str, ...]:
        """Patterns of ``mode: sampled`` watch entries: matching functions are always reported."""
        return self._profiles.patterns

    @profile_patterns.setter
    def profile_patterns(self, value: tuple[str, ...]) -> None:
        self._profiles.patterns = value

    @property
    def internal_errors(self) -> int:
        """Requests whose numbers could not be recorded (a bug in callwatch; counted
        rather than raised into the application)."""
        return self._errors + self._intervals.internal_errors

    # -- hot side: once per request -------------------------------------------------

    def record(self, handler: str, ns: int, error: int, state: State) -> None:
        """Add one finished request (``ns < 0``: a background call, no response time);
        ``error``: the flags ``ERROR`` and ``PROFILED`` (a profiled request's time is not
        the handler's: ``HandlerStats.settle``).

        Only an append: requests are added to the table in batches (:meth:`fold`), by the
        request that fills a batch or by the flusher before each swap: adding each request
        on its own costs far more CPU around real I/O (benchmarks/in_situ.py).
        """
        p = self.pending
        p.append((handler, ns, error, state))
        if len(p) >= FOLD_BATCH:
            self.fold()

    def background_started(self, state: State) -> None:
        """A watched call outside any request began with ``state``: until it ends and is
        recorded, each swap reports what it gained so far."""
        self._intervals.live[id(state)] = state

    def background_done(self, state: State) -> None:
        """The background call begun with ``state`` (:meth:`background_started`) ended:
        record it as a request of ``BACKGROUND``."""
        self._intervals.live.pop(id(state), None)
        self.record(BACKGROUND, -1, 0, state)

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
        if self.pending:
            self._intervals.add(_take(self.pending))
        if self._pending_profiles:
            self._add_profiles(_take(self._pending_profiles))

    def _add_profiles(self, batch: list[tuple[str, int, Any]]) -> None:
        for handler, ns, rows in batch:
            try:
                self._profiles.add(handler, ns, rows, self.max_handlers)
            except Exception:
                self._errors += 1

    def record_profile(self, handler: str, ns: int, rows: Any) -> None:
        """Add one profiled request: rows of (label, calls, own_ns, cum_ns).  Only an
        append, added by the next fold (a full batch of requests, or the swap): folding
        here made the profiled request fold everyone's pending requests, a cost that is
        not the profiler's but that the budget then had to count as such."""
        self._pending_profiles.append((handler, ns, rows))

    # -- flusher side --------------------------------------------------------------

    def set_start(self, start: float) -> None:
        """Start the current interval at ``start`` (configure: the current multiple)."""
        with self._lock:
            self.start = start

    def swap(self, end: float) -> Snapshot:
        """Return what was measured since the last swap and start a new interval at ``end``."""
        with self._lock:
            self.pending.extend(self._intervals.live_deltas())
            self._fold_locked()
            table = self._intervals.take()
            profiles = self._profiles.take()
            start, self.start = self.start, end
            top = self._profiles.select_top(profiles)
        snap = Snapshot(end if start is None else start, end, table, tuple(self.registry.entries))
        snap.profiles = profiles
        snap.profile_top = top
        return snap

    def restore(self, snap: Snapshot) -> None:
        """Merge a snapshot back into the current table (same interval continues)."""
        with self._lock:
            self._intervals.restore(snap.handlers)
            self.start = snap.start

    def after_fork_in_child(self) -> None:
        """A forked child starts empty, with a new lock (the parent's may be held)."""
        self._lock = threading.Lock()
        self.pending.clear()  # the parent's requests, already counted by the parent
        self._pending_profiles.clear()
        self._intervals.reset()
        self._profiles.profiles = {}

    def reset(self) -> None:
        """Forget everything: tables, admitted handler names, seen functions."""
        with self._lock:
            self.pending.clear()
            self._pending_profiles.clear()
            self._intervals.reset()
            self._profiles.reset()
            self.start = None


T = TypeVar("T")


def _take(pending: list[T]) -> list[T]:
    """Everything in ``pending`` now.  Other threads (or a signal handler on this one) may
    append meanwhile, always at the end: only what was taken is removed."""
    batch = pending[:]
    del pending[: len(batch)]
    return batch
