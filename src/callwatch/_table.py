"""The interval table: finished requests added per handler, in batches.

Requests are added a batch at a time: the records of the batch's states (only the
entries each request touched, see ``_state``) are sorted by entry, and each entry's numbers
over the batch summed and maxed, all with C-level ``sorted``/``groupby``/``sum``/``max``.
A group's record is filled by the wrappers like a function's (calls: its members' calls;
time: while at least one member ran), so it needs nothing of its own here.

Background states that are still running (a watched worker loop outside any handler) are
reported at each swap by what they gained since the last report (``reported``), and the
rest when they finish.

Every method here runs under the collector's lock.
"""

from __future__ import annotations

from itertools import chain, compress, groupby, islice, repeat
from operator import itemgetter
from typing import Any, Iterable

from ._limits import Limiter
from ._state import CALLS, DIMS, HEADER_SIZE, NAME, NS, State, new_record, new_state, records, speedups
from ._stats import BACKGROUND, OTHER_VALUE, OVERFLOW, FuncStats, HandlerKey, HandlerStats, sketch_add_many

#: A finished request: (handler, ns, flags, state); ns < 0: background calls.  Flags:
#: ``ERROR`` (it raised, or returned a 5xx) and ``PROFILED``.
Item = tuple[str, int, int, Any]

ERROR = 1
#: The request was profiled: it ran slower because callwatch profiled it, so its response
#: time and its watched calls' time are kept apart until the swap, where
#: ``HandlerStats.settle`` decides what they count for (its docstring says what and why).
#: Its requests, errors and calls count like any other request's.
PROFILED = 2


class IntervalTable:
    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self.table: dict[HandlerKey, HandlerStats] = {}
        # Handler -> entries it ever called: later intervals report zeros for them, so
        # a count that drops to 0 shows as 0 rather than as a gap.
        self.seen: dict[HandlerKey, set[int]] = {}
        #: Background states still running, by id (see module docstring).  Never
        #: rebound: the hot path holds its methods.
        self.live: dict[int, State] = {}
        #: id of a live (or finished, not yet added) background state -> what the swaps
        #: reported of it so far: entry -> (calls, ns).
        self.reported: dict[int, dict[int, tuple[int, int]]] = {}
        self.internal_errors = 0

    def add(self, batch: list[Item]) -> None:
        for handler, items in self._by_handler(batch).items():
            try:
                self._add_requests(handler, items)
            except Exception:
                self.internal_errors += len(items)

    def _by_handler(self, batch: list[Item]) -> dict[str, list[Item]]:
        """The batch's requests by handler name (a name given during the request wins).

        The common batch (states as ``new_state`` makes them, none renamed, no background
        state reported in part) is checked with C-level ``map`` only: this runs for every
        request (benchmarks/in_situ.py, the fold row); anything else goes request by
        request (``_by_handler_checked``)."""
        try:
            states = list(map(_STATE, batch))
            plain = not self.reported and set(map(type, states)) == {dict} and not any(map(_NAME_OF, states))
        except (KeyError, TypeError, IndexError):
            plain = False
        if not plain:
            return self._by_handler_checked(batch)
        names = list(map(_HANDLER, batch))
        # In the order of first appearance: new names are admitted (capped) in that order.
        order = dict.fromkeys(names)
        if len(order) == 1:
            return {names[0]: batch}
        by_handler: dict[str, list[Item]] = {h: [] for h in order}
        for h, item in zip(names, batch):
            by_handler[h].append(item)
        return by_handler

    def _by_handler_checked(self, batch: list[Item]) -> dict[str, list[Item]]:
        by_handler: dict[str, list[Item]] = {}
        for item in batch:
            state = item[3]
            try:
                key = state[NAME] or item[0]  # renamed during the request
            except (KeyError, TypeError, IndexError):  # not a state from new_state()
                self.internal_errors += 1
                continue
            if type(state) is not dict:
                self.internal_errors += 1
                continue
            if item[1] < 0 and self.reported:  # reported in part by an earlier swap?
                before = self.reported.pop(id(state), None)
                if before is not None:
                    item = (item[0], item[1], item[2], unreported(state, before)[0])
            items = by_handler.get(key)
            if items is None:
                by_handler[key] = [item]
            else:
                items.append(item)
        return by_handler

    def _add_requests(self, handler: str, items: list[Item]) -> None:
        # Requests of one handler; those with dimensions are also added to their split
        # tables, keyed by the handler name as admitted.
        hs = self.table.get(handler)
        if hs is None:
            hs, handler = self._new_handler(handler)
        _add_batch(hs, items)
        splits: dict[tuple[str, str, str], list[Item]] = {}
        for item in compress(items, map(_DIMS_OF, map(_STATE, items))):  # those with dimensions
            for key, value in item[3][DIMS].items():
                splits.setdefault((handler, key, value), []).append(item)
        for dk, its in splits.items():
            ds = self.table.get(dk)
            if ds is None:
                ds = self._new_split(dk)
            _add_batch(ds, its)

    def _new_handler(self, handler: str) -> tuple[HandlerStats, str]:
        if handler != BACKGROUND and not self.limiter.handler(handler):
            handler = OVERFLOW
            hs = self.table.get(OVERFLOW)
            if hs is not None:
                return hs, handler
        hs = self.table[handler] = HandlerStats()
        return hs, handler

    def _new_split(self, key: tuple[str, str, str]) -> HandlerStats:
        handler, dim, value = key
        if not self.limiter.dimension_value(handler, dim, value):
            key = (handler, dim, OTHER_VALUE)
            hs = self.table.get(key)
            if hs is not None:
                return hs
        hs = self.table[key] = HandlerStats()
        return hs

    def live_deltas(self) -> list[Item]:
        """What the running background states gained since the last report, as requests
        to add now; ``reported`` remembers it so it is not added again."""
        out: list[Item] = []
        for state in list(self.live.values()):
            delta, now = unreported(state, self.reported.get(id(state), {}))
            if len(delta) > HEADER_SIZE:
                out.append((BACKGROUND, -1, 0, delta))
            self.reported[id(state)] = now
        return out

    def take(self) -> dict[HandlerKey, HandlerStats]:
        """The filled table, zero-filled for what each handler called before; a new one
        starts."""
        table, self.table = self.table, {}
        for key in self.limiter.take_evicted():
            self.seen = {k: v for k, v in self.seen.items()
                         if k != key and not (isinstance(k, tuple) and (k[0] == key or k == key))}
        self.limiter.tick()
        for name, hs in table.items():
            hs.settle()
            self.seen.setdefault(name, set()).update(hs.funcs)
        for name, seen in self.seen.items():
            stats = table.get(name)
            if stats is None:
                stats = table[name] = HandlerStats()
            for k in seen:
                if k not in stats.funcs:
                    stats.funcs[k] = FuncStats()
        return table

    def restore(self, handlers: dict[HandlerKey, HandlerStats]) -> None:
        for name, hs in handlers.items():
            mine = self.table.get(name)
            if mine is None:
                mine = self.table[name] = HandlerStats()
            mine.merge(hs)

    def reset(self) -> None:
        self.table = {}
        self.seen = {}
        self.live.clear()
        self.reported.clear()
        self.limiter.reset()


def unreported(state: State, before: dict[int, tuple[int, int]]) -> tuple[State, dict[int, tuple[int, int]]]:
    """(what ``state`` has beyond ``before``, everything it has now)."""
    delta = new_state()
    now: dict[int, tuple[int, int]] = {}
    for k, rec in records(state):
        b_calls, b_ns = before.get(k, (0, 0))
        calls, ns = rec[CALLS], rec[NS]
        if ns < 0:  # an async call in flight: its time is added when it ends
            ns = b_ns
        now[k] = (calls, ns)
        if calls != b_calls or ns != b_ns:
            d = delta[k] = new_record()
            d[CALLS], d[NS] = calls - b_calls, ns - b_ns
    return delta, now


def _add_column(funcs: dict[int, FuncStats], k: int, calls: int, calls_max: int, ns: int, ns_max: int,
                profiled: bool) -> None:
    """Add entry ``k``'s calls and time over a batch of requests (sums and maxima; a time
    read while an async call still ran counts 0); the time of profiled requests apart
    (``FuncStats.profiled_ns``)."""
    fs = funcs.get(k)
    if fs is None:
        fs = funcs[k] = FuncStats()
    fs.calls += calls
    if calls_max > fs.calls_max:
        fs.calls_max = calls_max
    if profiled:
        fs.profiled_ns += ns
        fs.profiled_max = max(fs.profiled_max, ns_max)
        return
    fs.ns += ns
    if ns_max > fs.ns_max:
        fs.ns_max = ns_max


def _add_batch(hs: HandlerStats, items: list[Item]) -> None:
    """Add finished requests ``(handler, ns, flags, state)`` to one handler's table."""
    flags = sum(map(_FLAGS, items))  # background calls: 0
    if flags > ERROR and max(map(_FLAGS, items)) >= PROFILED:  # rare: 1 request in 1/rate
        _add_profiled(hs, [it for it in items if it[2] >= PROFILED])
        items = [it for it in items if it[2] < PROFILED]
        flags = sum(map(_FLAGS, items))
    timed = list(map(_NS_OF, items))
    if timed and min(timed) < 0:
        timed = [t for t in timed if t >= 0]  # not background calls
    if timed:
        hs.requests += len(timed)
        hs.errors += flags
        hs.ns += sum(timed)
        m = max(timed)
        if m > hs.ns_max:
            hs.ns_max = m
        sketch_add_many(hs.sketch, timed)
    _add_columns(hs, items, False)


def _add_profiled(hs: HandlerStats, items: list[Item]) -> None:
    """Profiled requests: counted, their times kept apart (see ``PROFILED``)."""
    hs.requests += len(items)
    hs.errors += sum([it[2] & ERROR for it in items])
    hs.profiled += [it[1] for it in items]
    _add_columns(hs, items, True)


def _add_columns(hs: HandlerStats, items: list[Item], profiled: bool) -> None:
    funcs = hs.funcs
    states = list(map(_STATE, items))
    if _columns is not None:  # the C extension's one pass over the records
        try:
            summed = _columns(states, CALLS, NS)
        except (TypeError, ValueError, OverflowError):
            pass  # records it does not know (lists): the same in Python below
        else:
            for k, (calls, calls_max, ns, ns_max) in summed.items():
                _add_column(funcs, k, calls, calls_max, ns, ns_max, profiled)
            return
    for k, recs in _records_by_entry(states):
        calls = tuple(map(_CALLS, recs))
        ns = tuple(map(_NS, recs))
        if min(ns) < 0:  # a state read while an async call was still running: count 0 for it
            ns = tuple([t if t > 0 else 0 for t in ns])
        _add_column(funcs, k, sum(calls), max(calls), sum(ns), max(ns), profiled)


def _records_by_entry(states: list[State]) -> Iterable[tuple[int, list[list[int]]]]:
    """(entry, its records in the batch) for every entry the batch's requests touched,
    with C-level loops over the records: per entry, a lookup in every state when the
    batch touched few entries; else the records sorted by entry (header skipped by
    position), so the cost follows what the requests touched, never what is watched."""
    touched = sum(map(len, states)) - HEADER_SIZE * len(states)
    if not touched:
        return
    keys = set().union(*states)
    if (len(keys) - HEADER_SIZE) * len(states) <= 4 * touched:
        for k in keys:
            if k > 0:
                yield k, list(filter(None, map(dict.get, states, repeat(k))))
        return
    pairs = sorted(chain.from_iterable(map(islice, map(dict.items, states), _SKIP, _TO_END)), key=_KEY)
    for k, run in groupby(pairs, _KEY):
        yield k, list(map(_RECORD, run))


_columns = speedups.columns if speedups is not None else None
_HANDLER = itemgetter(0)
_NS_OF = itemgetter(1)
_FLAGS = itemgetter(2)
_STATE = itemgetter(3)
_NAME_OF = itemgetter(NAME)
_DIMS_OF = itemgetter(DIMS)
_SKIP = repeat(HEADER_SIZE)
_TO_END = repeat(None)
_KEY = itemgetter(0)
_RECORD = itemgetter(1)
_CALLS = itemgetter(CALLS)
_NS = itemgetter(NS)
