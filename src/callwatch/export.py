"""Export: snapshot -> stages -> metric names -> send buffer -> carbon, then the sinks.

Knows nothing about wrapping.  At the end of each interval (decided by the flush clock,
``_flushclock``) the :class:`Exporter`

1. swaps the collector's table (a short lock) and gets the interval's :class:`Snapshot`;
2. runs the *stages*, which annotate the snapshot (the spike detector sets ``snap.spikes``);
3. names it (``naming.Namer``) and adds the points, with callwatch's self-metrics, to the
   bounded send buffer (``_buffer``), which sends them in batches (``_sender``);
4. hands the finished snapshot to the *sinks* (``on_snapshot`` callbacks);
5. runs the tick hooks (the profiler's), at every tick, whether an interval ended or not.

Everything after the swap runs outside any lock the request threads use.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from ._buffer import BufferStats, SendBuffer
from ._flushclock import Clock, FlushClock, SystemClock
from ._sender import GraphyteSender, Sender, split_lines
from .aggregate import Collector, Snapshot
from .naming import Namer, Point, sanitize

__all__ = ["Clock", "ExportStats", "Exporter", "GraphyteSender", "Namer", "Sender", "SnapshotSink", "Stage",
           "SystemClock", "sanitize", "split_lines"]  # Namer, sanitize: from .naming

log = logging.getLogger("callwatch")

Stage = Callable[[Snapshot], None]
"""A stage annotates the snapshot before it is named and sent (the spike detector)."""
SnapshotSink = Callable[[Snapshot], None]
"""A sink receives each snapshot after it was sent (``configure(on_snapshot=...)``)."""
#: Called at every tick of the flush clock, in the flush thread (the profiler's on_flush).
TickHook = Callable[[], None]


@dataclass
class ExportStats:
    """What the exporter did so far (``Exporter.stats``): points, send errors, flushes."""

    points_sent: int = 0
    points_dropped: int = 0
    points_made: int = 0  # lines built; always = sent + dropped + still buffered
    send_errors: int = 0
    flushes: int = 0
    last_flush_ms: float = 0.0


class SelfMetrics:
    """callwatch's own numbers, sent with each interval: counts since the last report."""

    def __init__(self) -> None:
        self._reported = BufferStats()

    def points(self, namer: Namer, snap: Snapshot, buffer: SendBuffer, last_flush_ms: float,
               internal_errors: int) -> list[Point]:
        s, r = buffer.stats, self._reported
        values = {
            "spikes_active": len(snap.spikes),
            "points_sent": s.points_sent - r.points_sent,
            "points_dropped": s.points_dropped - r.points_dropped,
            "send_errors": s.send_errors - r.send_errors,
            "points_buffered": len(buffer),
            "flush_ms": round(last_flush_ms, 3),
            "internal_errors": internal_errors,
        }
        self._reported = BufferStats(points_sent=s.points_sent, points_dropped=s.points_dropped,
                                     send_errors=s.send_errors)
        out: list[Point] = []
        for metric, value in values.items():
            name, tags = namer.self_metric(metric)
            out.append((name, value, tags))
        return out


class Exporter:
    """Flushes the collector every ``interval`` seconds through the stages to a sender and
    to the sinks (see the module docstring for the order)."""

    def __init__(self, collector: Collector, namer: Namer, sender: Sender | None, *,
                 interval: int, clock: Clock | None = None, max_buffered_points: int = 100_000,
                 stages: Iterable[Stage] = (), sinks: Iterable[SnapshotSink] = (),
                 where: str = "Graphite") -> None:
        self.collector = collector
        self.namer = namer
        self.sender = sender
        self.flush_clock = FlushClock(interval, clock or SystemClock(), self.flush)
        self.buffer = SendBuffer(sender, max_buffered_points, where) if sender is not None else None
        self.stages = list(stages)
        self.sinks = list(sinks)
        self.hooks: list[TickHook] = []
        self._self_metrics = SelfMetrics()
        self._flushes = 0
        self._last_flush_ms = 0.0
        self._lock = threading.Lock()

    @property
    def interval(self) -> int:
        """The flush interval, seconds."""
        return self.flush_clock.interval

    # -- the thread --------------------------------------------------------------------

    def start(self) -> None:
        """Start the flush thread (it flushes at each multiple of the interval)."""
        self.flush_clock.start()

    def stop(self, timeout: float = 5.0) -> Snapshot | None:
        """Stop the thread and do the final flush; returns the final (partial) snapshot."""
        self.flush_clock.stop(timeout)
        return self.flush(final=True)

    def after_fork_in_child(self) -> None:
        """New lock, empty buffer and counts (the buffered points are the parent's to
        send), and the flush thread started again if it ran."""
        self._lock = threading.Lock()
        if self.buffer is not None:
            self.buffer.clear()
        self._self_metrics = SelfMetrics()
        self._flushes = 0
        self._last_flush_ms = 0.0
        self.flush_clock.after_fork_in_child()

    @property
    def running(self) -> bool:
        """Whether the flush thread is alive."""
        return self.flush_clock.running

    # -- the pipeline ----------------------------------------------------------------

    def flush(self, final: bool = False) -> Snapshot | None:
        """Swap the table if an interval has ended (always when ``final``) and send.

        Returns the snapshot that was swapped out, if any.
        """
        with self._lock:
            t0 = time.perf_counter()
            snap = self._swap(final)
            if snap is not None:
                for stage in self.stages:
                    _safely("snapshot stage", stage, snap)
            if self.buffer is not None:
                if snap is not None:
                    points = self.namer.points(snap) + self._self_metrics.points(
                        self.namer, snap, self.buffer, self._last_flush_ms, self.collector.internal_errors)
                    self.buffer.add(points, int(snap.start))
                self.buffer.send()
            if snap is not None:
                for sink in self.sinks:
                    _safely("snapshot sink", sink, snap)
            for hook in self.hooks:
                _safely("flush hook", hook)
            self._flushes += 1
            self._last_flush_ms = (time.perf_counter() - t0) * 1000.0
            return snap

    def _swap(self, final: bool) -> Snapshot | None:
        cut = self.flush_clock.cut(self.collector.start, final)
        if cut is None:
            return None
        snap = self.collector.swap(cut.at)
        snap.end = cut.end
        return snap

    @property
    def stats(self) -> ExportStats:
        """A copy of the counts so far."""
        b = self.buffer.stats if self.buffer is not None else BufferStats()
        return ExportStats(points_sent=b.points_sent, points_dropped=b.points_dropped,
                           points_made=b.points_made, send_errors=b.send_errors,
                           flushes=self._flushes, last_flush_ms=self._last_flush_ms)

    @property
    def buffered(self) -> int:
        """Points waiting in the send buffer (0 without a sender)."""
        return len(self.buffer) if self.buffer is not None else 0


def _safely(what: str, fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("callwatch: %s %r failed", what, fn)
