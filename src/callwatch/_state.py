"""The per-request state: its layout named here and nowhere else.

A request's state maps the index of each registry entry it touched (a watched function or
a group, always >= 1) to that entry's *record*, a list of three ints at offsets ``CALLS``,
``NS`` and ``ACTIVE``.  It holds only the entries the request touched, so what a request
costs (allocating its state, adding it to the interval's table) does not depend on how
many functions are watched in all.  A record is made on first touch (``record``, or the same inline in the generated wrappers; the C wrapper, ``_speedups.c``,
receives these offsets when a function is wrapped).

Besides records, a state has header keys (negative, so never an entry's index), set to 0
by ``new_state``:

    state[DIMS]   the request's dimensions (a dict), or 0
    state[NAME]   a handler name given during the request (``callwatch.name_request``), or 0
"""

from __future__ import annotations

from typing import Any, Dict

#: Offsets within an entry's record: calls, nanoseconds (outermost calls only), and the
#: "active" flag (sync) or depth (async) that keeps re-entries from being timed twice.
CALLS = 0
NS = 1
ACTIVE = 2
RECORD_SIZE = 3

#: Header keys: negative, and not -1, whose hash CPython makes -2 (a collision that
#: costs every state a probe on each header lookup; benchmarks/micro.py, @handler rows).
DIMS = -2
NAME = -3
#: How many header keys a state starts with: ``new_state`` puts them first, and the fold
#: skips them by position (dicts keep insertion order).
HEADER_SIZE = 2


#: A state is a plain dict (its subscript is the fastest lookup the interpreter has).
State = Dict[int, Any]


def new_state() -> State:
    """A fresh request state: the header, no records yet."""
    return {DIMS: 0, NAME: 0}


def record(state: State, key: int) -> list[int]:
    """Entry ``key``'s record in ``state``, made on first touch.  ``setdefault``: a signal
    handler or finalizer may run in the middle and make it first; its counts stay."""
    rec: list[int] | None = state.get(key)
    if rec is None:
        rec = state.setdefault(key, [0, 0, 0])
    return rec


def records(state: State) -> list[tuple[int, list[int]]]:
    """(entry index, record) of every entry ``state`` touched."""
    return list(state.items())[HEADER_SIZE:]


def calls(state: State) -> dict[int, int]:
    """Entry index -> calls so far, for the entries with calls."""
    return {k: r[CALLS] for k, r in records(state) if r[CALLS]}
