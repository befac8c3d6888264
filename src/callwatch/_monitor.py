"""``mode: count``: counting calls through sys.monitoring (Python 3.12+), without a wrapper.

sys.monitoring calls one callback at the start of the code objects we enable
(``set_local_events``), so the function itself is not replaced: no wrapper frame, and
copies bound anywhere (``from x import f``, callbacks, closures) are counted too.  The
callback attributes the call to the current request like a wrapper does, but only counts:
it cannot time the call (that would need a second event per return).  It is not the
cheaper way to count: the callback is a Python call per event, which in a hot loop costs
less than the counting and timing wrapper (benchmarks/monitoring.py) but in a server,
right after I/O, more than the C wrapper (benchmarks/features.py, its mode: count row);
what it buys is reach.  On Python 3.10/3.11
``mode: count`` falls back to the wrapper.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from . import _core
from .aggregate import Entry

AVAILABLE = sys.version_info >= (3, 12)
_TOOL_NAME = "callwatch"

_entries: dict[Any, Entry] = {}  # code object -> its watched entry
_tool: int | None = None


def _on_start(code: Any, offset: int) -> None:
    entry = _entries.get(code)
    if entry is not None:
        _core.add_call(entry, 0)  # counted only: no time (see the module docstring)


def _ensure_tool() -> int | None:
    global _tool
    if _tool is not None:
        return _tool
    mon = sys.monitoring  # type: ignore[attr-defined]
    for tool in (3, 4):  # the ids CPython leaves free (0, 1, 2 and 5 are taken by convention)
        if mon.get_tool(tool) is None:
            mon.use_tool_id(tool, _TOOL_NAME)
            mon.register_callback(tool, mon.events.PY_START, _on_start)
            _tool = tool
            return tool
    return None


def count(func: Any, name: str, group: str | None) -> Callable[[], None] | None:
    """Count calls of ``func`` for the current request; returns the undo, or None when
    sys.monitoring cannot be used (the caller then wraps the function instead)."""
    code = getattr(func, "__code__", None)
    if not AVAILABLE or code is None:
        return None
    tool = _ensure_tool()
    if tool is None:
        return None
    mon = sys.monitoring  # type: ignore[attr-defined]
    _entries[code] = _core.registry.function(name, group)
    mon.set_local_events(tool, code, mon.get_local_events(tool, code) | mon.events.PY_START)

    def undo() -> None:
        _entries.pop(code, None)
        mon.set_local_events(tool, code, 0)

    return undo
