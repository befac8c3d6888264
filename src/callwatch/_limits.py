"""Cardinality limits that recover: handler names and dimension values, each capped.

A name gets a place of its own while fewer than the cap are in use; beyond, it is counted
under ``_other``.  Places are not kept for good: a name unused for ``idle_intervals``
intervals gives its place to the next new name that needs one.  So a scan of random URLs
that fills every place fades out, and a real endpoint seen afterwards gets its own series
(after at most ``idle_intervals`` intervals under ``_other``), while below the cap nothing
is ever evicted and a quiet handler keeps reporting zeros.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable

from ._stats import HandlerKey

#: Intervals a name must go unused before a new name may take its place.
IDLE_INTERVALS = 3


class Places:
    """At most ``cap`` names, least recently used first; eviction only of idle ones."""

    __slots__ = ("_used",)

    def __init__(self) -> None:
        self._used: OrderedDict[Hashable, int] = OrderedDict()  # name -> last interval used

    def admit(self, name: Hashable, cap: int, now: int, idle: int) -> tuple[bool, Hashable | None]:
        """(has a place, the name evicted to make room or None)."""
        used = self._used
        if name in used:
            used[name] = now
            used.move_to_end(name)
            return True, None
        evicted = None
        if len(used) >= cap:
            oldest, last = next(iter(used.items()), (None, now))
            if oldest is None or now - last < idle:
                return False, None
            del used[oldest]
            evicted = oldest
        used[name] = now
        return True, evicted

    def clear(self) -> None:
        self._used.clear()

    def __contains__(self, name: Hashable) -> bool:
        return name in self._used


class Limiter:
    """The caps on handler names and on dimension values per (handler, dimension).

    ``tick()`` ends an interval.  ``evicted`` collects the names that lost their place
    since it was last read, so the interval table stops reporting zeros for them.
    """

    def __init__(self, max_handlers: int, max_dimension_values: int, idle_intervals: int = IDLE_INTERVALS) -> None:
        self.max_handlers = max_handlers
        self.max_dimension_values = max_dimension_values
        self.idle_intervals = idle_intervals
        self.interval = 0
        self._handlers = Places()
        self._values: dict[tuple[str, str], Places] = {}
        self.evicted: list[HandlerKey] = []

    def tick(self) -> None:
        self.interval += 1

    def handler(self, name: str) -> bool:
        """May ``name`` have a series of its own (now)?"""
        ok, evicted = self._handlers.admit(name, self.max_handlers, self.interval, self.idle_intervals)
        if evicted is not None:
            self.evicted.append(str(evicted))
            self._values = {k: v for k, v in self._values.items() if k[0] != evicted}
        return ok

    def dimension_value(self, handler: str, dim: str, value: str) -> bool:
        places = self._values.get((handler, dim))
        if places is None:
            places = self._values[(handler, dim)] = Places()
        ok, evicted = places.admit(value, self.max_dimension_values, self.interval, self.idle_intervals)
        if evicted is not None:
            self.evicted.append((handler, dim, str(evicted)))
        return ok

    def take_evicted(self) -> list[HandlerKey]:
        out, self.evicted = self.evicted, []
        return out

    def reset(self) -> None:
        self._handlers.clear()
        self._values = {}
        self.evicted = []
