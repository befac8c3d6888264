"""The per-request state: one flat list, its layout named here and nowhere else.

Entry ``k`` of the registry (a watched function or a group) owns ``SLOTS`` slots starting
at ``k * SLOTS``; entry 0 is the request's header, whose slots hold its dimensions and a
handler name given during the request.  The C wrapper (``_speedups.c``) receives slot
numbers computed from these names when a function is wrapped.
"""

from __future__ import annotations

#: Slots per entry.
SLOTS = 3
#: Offsets within an entry's slots: calls, nanoseconds (outermost calls), active depth.
CALLS = 0
NS = 1
ACTIVE = 2

#: Header slots (entry 0): the request's dimensions (a dict, or 0) ...
DIMS = 0
#: ... and a handler name set during the request (``callwatch.name_request``), or 0.
NAME = 1


def slots(index: int) -> tuple[int, int, int]:
    """(calls, ns, active) slot numbers of entry ``index``."""
    base = SLOTS * index
    return base + CALLS, base + NS, base + ACTIVE
