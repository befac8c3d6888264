"""The flush clock: when an interval ends, and the thread that ends it.

Intervals are aligned to wall-clock multiples of the interval (every process and host cuts
at the same instants, so their points line up in Graphite).  The thread sleeps on a
monotonic wait until the next multiple, then calls the exporter's flush.

The wall clock can step (NTP, a VM resumed, an operator).  Back by more than an interval:
the running interval is handed out as it is, under its own start, and the next one starts
at the current multiple -- flushing never waits for the old time to come back.  Forward
(or no flush for several intervals: a suspended process): the counts so far are handed
out once, under their start, and the next interval starts at the current multiple -- no
run of empty intervals to catch up.  Either way one warning per step.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

__all__ = ["Clock", "Cut", "FlushClock", "SystemClock"]

log = logging.getLogger("callwatch")


class Clock(Protocol):
    """Wall-clock seconds (``time.time``); ``testing.FakeClock`` is one for tests."""

    def time(self) -> float:
        """Seconds since the epoch, now."""


class SystemClock:
    """The wall clock (``time.time``) the flush clock aligns intervals to; tests pass a
    :class:`callwatch.testing.FakeClock` instead."""

    def time(self) -> float:
        """Seconds since the epoch, now (``time.time()``)."""
        return time.time()


@dataclass(frozen=True)
class Cut:
    """Where to cut the collector's table: the next interval starts ``at``; the interval
    handed out is reported as ending at ``end``."""

    at: float
    end: float


class FlushClock:
    """Decides where intervals end (:meth:`cut`) and runs the thread that calls ``tick``."""

    def __init__(self, interval: int, clock: Clock, tick: Callable[[], object]) -> None:
        self.interval = interval
        self.clock = clock
        self._tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def aligned(self) -> float:
        """The start of the interval the wall clock is in now."""
        return self._align(self.clock.time())

    def _align(self, t: float) -> float:
        return math.floor(t / self.interval) * self.interval

    def cut(self, start: float | None, final: bool = False) -> Cut | None:
        """The cut to make now, for a table whose interval began at ``start``; None when
        that interval has not ended (``final``: always cut, the partial interval ends now)."""
        now = self.clock.time()
        boundary = self._align(now)
        if final:
            return Cut(boundary, now) if start is None else Cut(max(boundary, start), max(now, start))
        if start is None or boundary == start:
            return None
        iv = self.interval
        if boundary < start:
            log.warning("callwatch: the wall clock went back by about %d s; the interval that began at "
                        "%d is sent now, and flushing goes on at multiples of %d s from %d",
                        round(start + iv - now), start, iv, boundary + iv)
            return Cut(boundary, start + iv)
        if boundary > start + iv:
            log.warning("callwatch: no flush for %d s (the wall clock jumped forward, or the process "
                        "was suspended); what was counted since %d is sent as that one interval, "
                        "and flushing goes on at multiples of %d s from %d",
                        round(now - start), start, iv, boundary + iv)
        return Cut(boundary, boundary)

    # -- the thread ------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="callwatch-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            now = self.clock.time()
            wait = self._align(now) + self.interval - now
            if self._stop.wait(max(0.0, wait) + 0.001):
                return
            try:
                self._tick()
            except Exception:  # never let the thread die; report and go on
                log.exception("callwatch: flush failed")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def after_fork_in_child(self) -> None:
        """Threads don't survive fork: a new event, and the thread started again."""
        was_running = self._thread is not None
        self._stop = threading.Event()
        self._thread = None
        if was_running:
            self.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
