"""Under gevent, yappi's hook is on only while the profiled request's greenlet runs.

yappi's hook belongs to the thread, and every greenlet of a gevent server runs on that
thread.  Hooked for the whole profile, every other request paid for the profiled one: the
hook's work on each of their calls, and a Python call per event for yappi's greenlet id.
A profiled request that waited on I/O kept them all paying while it waited, which
stalled the event loop (issue 13; tests/test_profiling_gevent.py measures it).

The gate is a greenlet switch tracer (``greenlet.settrace``), set for the length of one
profile: a switch out of the profiled greenlet stops yappi, a switch back into it starts
yappi again.  The other greenlets run unhooked, and each switch costs one Python call
while a profile is on.  yappi keeps its stats and call stacks across a stop and start.
greenlet calls its tracer with tracing off (its ``TracingGuard``), so none of the gate's
frames are recorded, and the request's call stack stays the one yappi saw without the
gate: the time the request spends switched out stays in the function that switched out.

The gate also counts the thread's CPU time spent while the request is switched out
(``away_ns``): the other greenlets' work, which is not the profile's cost, less
``SWITCH_NS`` for each of their switches, which is (the gate's own call on it).
"""

from __future__ import annotations

import importlib
import time
from typing import Any, Callable


def context_id() -> Callable[[], int]:
    """yappi's context id under the gate: the OS thread's.  Only one greenlet per thread
    runs hooked, so that tells contexts apart, and it is a C function, where yappi's
    greenlet backend makes a Python call per event."""
    from gevent import monkey

    get_ident: Callable[[], int] = monkey.get_original("_thread", "get_ident")
    return get_ident


#: A switch between two other greenlets while a profile is on costs the host the tracer's
#: call (greenlet's call of it, and its code), which the profile must pay: charged at this
#: many ns per switch, a constant rather than two more clock reads on every switch of the
#: server.  Calibrated: ``python benchmarks/profiling.py --switch-cost`` measures a traced
#: switch against an untraced one; this is above what it printed on 3.11 and 3.13.
SWITCH_NS = 2_000


class GreenletGate:
    """Keeps yappi running only while one greenlet (the profiled request's) runs."""

    def __init__(self, yappi_c: Any, after_start: Callable[[], None] | None) -> None:
        greenlet = importlib.import_module("greenlet")
        self._settrace: Callable[[Any], Any] = greenlet.settrace
        self._getcurrent: Callable[[], Any] = greenlet.getcurrent
        self._yappi_start: Callable[[int, int], None] = yappi_c.start
        self._yappi_stop: Callable[[], None] = yappi_c.stop
        self._after_start = after_start  # 3.12+: take the hook off the other threads again
        self._profiled: Any = None
        self._working = False
        self._previous: Any = None  # the tracer the host had (gevent's monitor, say)
        self._tracer = self._switch  # one bound method: what settrace hands back is it
        self._clock = time.thread_time_ns
        self._left_at = 0
        #: the thread's CPU time while the profiled greenlet was switched out, this profile,
        #: less ``SWITCH_NS`` per switch between two other greenlets meanwhile
        self.away_ns = 0

    def open(self) -> None:
        """From the profiled greenlet, right after yappi started."""
        self._profiled = self._getcurrent()
        self._working = True
        self.away_ns = 0
        self._previous = self._settrace(self._tracer)

    def close(self) -> None:
        """From the profiled greenlet, after yappi stopped: the host's tracer back."""
        if self._profiled is None:
            return
        current = self._settrace(self._previous)
        if current is not self._tracer:  # the host replaced ours meanwhile: keep theirs
            self._settrace(current)
        self._profiled = self._previous = None
        self._working = False

    def stop(self) -> None:
        """From the profiled greenlet, at the end of its profile: yappi stopped, then
        ``close`` (in that order, so that none of this is recorded)."""
        self._yappi_stop()
        self.close()

    def _switch(self, event: str, args: tuple[Any, Any]) -> None:
        origin, target = args
        if origin is self._profiled:
            self._yappi_stop()
            self._left_at = self._clock()
        try:
            previous = self._previous
            if previous is not None:
                previous(event, args)
        finally:
            if target is self._profiled:
                self.away_ns += self._clock() - self._left_at
                if self._working:
                    self._resume()
            elif origin is not self._profiled:
                # Between two other greenlets: this call is the profile's cost, though it
                # runs while the request is away (``away_ns`` would leave it out).
                self.away_ns -= SWITCH_NS

    def _resume(self) -> None:
        try:
            self._yappi_start(1, 0)  # builtins on, this thread only (as ``_reader``)
            if self._after_start is not None:
                self._after_start()
        except Exception:
            # Not raised into the host's switch: the profile misses the rest of the
            # request instead (yappi stays stopped until ``close``).
            self._yappi_stop()
            self._working = False
