"""The per-request state: its layout named here and nowhere else.

A request's state maps the index of each registry entry it touched (a watched function or
a group, always >= 1) to that entry's *record*, a list of three ints at offsets ``CALLS``,
``NS`` and ``ACTIVE``.  It holds only the entries the request touched, so what a request
costs (allocating its state, adding it to the interval's table) does not depend on how
many functions are watched in all.  A record is made on first touch: by ``__missing__``
for the Python wrappers, directly by the C wrapper (``_speedups.c``, which receives these
offsets when a function is wrapped).

Besides records, a state has header keys (negative, so never an entry's index); reading
one that was never set gives 0:

    state[DIMS]   the request's dimensions (a dict), or 0
    state[NAME]   a handler name given during the request (``callwatch.name_request``), or 0
"""

from __future__ import annotations

from typing import Any

#: Offsets within an entry's record: calls, nanoseconds (outermost calls only), and the
#: "active" flag (sync) or depth (async) that keeps re-entries from being timed twice.
CALLS = 0
NS = 1
ACTIVE = 2
RECORD_SIZE = 3

#: Header keys.
DIMS = -1
NAME = -2
#: What the flusher already reported of a live background state (see _table).
REPORTED = -3


class State(dict):  # type: ignore[type-arg]  # int -> record, or a header key -> value
    """One request's numbers: entry index -> [calls, ns, active], plus header keys."""

    __slots__ = ()

    def __missing__(self, key: int) -> Any:
        if key > 0:
            # setdefault: a signal handler or finalizer may have run in this very frame
            # and made the record already; its counts must not be overwritten.
            return self.setdefault(key, [0, 0, 0])
        return 0


def new_state() -> State:
    """A fresh, empty request state."""
    return State()


def records(state: State) -> list[tuple[int, list[int]]]:
    """(entry index, record) of every entry ``state`` touched."""
    return [(k, r) for k, r in list(state.items()) if k > 0]


def calls(state: State) -> dict[int, int]:
    """Entry index -> calls so far, for the entries with calls."""
    return {k: r[CALLS] for k, r in records(state) if r[CALLS]}
