"""The per-request state: its layout named here and nowhere else.

A request's state maps the index of each registry entry it touched (a watched function or
a group, always >= 1) to that entry's *record*: ``RECORD_SIZE`` ints at offsets ``CALLS``,
``NS`` and ``ACTIVE``, made on first touch by ``new_record`` (in ``record``, or the same
inline in the generated wrappers).  It holds only the entries the request touched, so what
a request costs (allocating its state, adding it to the interval's table) does not depend
on how many functions are watched in all.

A record is a ``_speedups.Record`` when the C extension is in use (its slots are int64s
in the object, which the C wrapper adds to in place, and it holds no references, so the
GC never tracks a state), else a list; both read and write the same way
(``rec[CALLS] += 1``), and the C wrapper hands a state holding lists to the Python one.
The C wrapper receives the offsets when a function is wrapped.

Besides records, a state has header keys (negative, so never an entry's index), set to 0
by ``new_state``:

    state[DIMS]   the request's dimensions (a dict), or 0
    state[NAME]   a handler name given during the request (``callwatch.name_request``), or 0
"""

from __future__ import annotations

from typing import Any, Callable, Dict, MutableSequence

from . import _env

# The C extension (src/callwatch/_speedups*.c), when it was built and not turned off with
# CALLWATCH_PURE_PYTHON=1: the records' type, and the watched-call wrapper (``_core``).
speedups: Any
try:
    if _env.flag("CALLWATCH_PURE_PYTHON"):
        raise ImportError("CALLWATCH_PURE_PYTHON is set")
    from . import _speedups as speedups
    if not hasattr(speedups, "Record"):  # built from an older source: its wrapper differs too
        raise ImportError("callwatch._speedups is out of date")
except ImportError:
    speedups = None

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


#: A fresh record, all zeros: a C-level copy of a zero record (no Python frame).
new_record: Callable[[], MutableSequence[int]] = (
    speedups.Record(RECORD_SIZE).__copy__ if speedups is not None else ([0] * RECORD_SIZE).copy)

#: A state is a plain dict (its subscript is the fastest lookup the interpreter has).
State = Dict[int, Any]


def new_state() -> State:
    """A fresh request state: the header, no records yet."""
    return {DIMS: 0, NAME: 0}


def record(state: State, key: int) -> MutableSequence[int]:
    """Entry ``key``'s record in ``state``, made on first touch.  ``setdefault``: a signal
    handler or finalizer may run in the middle and make it first; its counts stay."""
    rec: MutableSequence[int] | None = state.get(key)
    if rec is None:
        rec = state.setdefault(key, new_record())
    return rec


def records(state: State) -> list[tuple[int, MutableSequence[int]]]:
    """(entry index, record) of every entry ``state`` touched.  Read from a copy: the state
    may be a running request's, where a garbage collection (``callwatch.memory``) can add
    a record in the middle of any allocation, the list's own included."""
    return list(state.copy().items())[HEADER_SIZE:]


def calls(state: State) -> dict[int, int]:
    """Entry index -> calls so far, for the entries with calls."""
    return {k: r[CALLS] for k, r in records(state) if r[CALLS]}
