"""Export: snapshot -> Graphite metric names -> graphyte lines -> carbon.

Knows nothing about wrapping.  The :class:`Exporter` runs one daemon thread that wakes at
wall-clock multiples of the interval, swaps the collector's table, formats it outside any
lock the request threads use, appends the lines to a bounded buffer and sends the buffer
in batches.  A batch that fails stays in the buffer and is sent again at the next flush
with its original timestamps (carbon keeps the last value written for a name and
timestamp, so sending a point twice is harmless; losing one is not).
"""

from __future__ import annotations

import collections
import logging
import math
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

import graphyte

from .aggregate import Collector, Snapshot
from .naming import Namer, Point, sanitize

__all__ = ["Clock", "Exporter", "GraphyteSender", "Namer", "SystemClock", "sanitize"]  # Namer, sanitize: from .naming

log = logging.getLogger("callwatch")

#: Largest payload per TCP connection (one connection per flush, unless carbon was down
#: and a large backlog is being resent), and per UDP datagram.
TCP_BATCH_BYTES = 1024 * 1024
UDP_DATAGRAM_BYTES = 1400

class Clock(Protocol):
    def time(self) -> float: ...


class SystemClock:
    def time(self) -> float:
        return time.time()


# --------------------------------------------------------------------------------------
# Sending


class GraphyteSender(graphyte.Sender):  # type: ignore[misc]
    """graphyte's line format, with delivery that callwatch can trust.

    ``send_message`` raises on any failure, so the caller keeps the batch.  Over TCP it
    sends the whole batch (``sendall``), half-closes, and waits until carbon closes its
    side: carbon only does that after reading everything we sent, so a batch counts as
    sent only when carbon has actually read it (a peer that accepts but never reads, or
    dies mid-batch, is a failure, not a silent loss).  UDP is sent in datagrams of whole
    lines.
    """

    def __init__(self, host: str, port: int = 2003, *, protocol: str = "tcp", timeout: float = 2.0) -> None:
        super().__init__(host, port=port, prefix=None, timeout=timeout, interval=None,
                         protocol=protocol, raise_send_errors=True)

    def __del__(self) -> None:  # graphyte's __del__ stops a thread we never start
        pass

    def send_message(self, message: bytes) -> None:
        if self.protocol == "udp":
            self._send_udp(message)
        else:
            self._send_tcp(message)

    def _send_tcp(self, message: bytes) -> None:
        with socket.create_connection((self.host, self.port), self.timeout) as sock:
            sock.settimeout(self.timeout)
            sock.sendall(message)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass

    def _send_udp(self, message: bytes) -> None:
        family, kind, proto, _, addr = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as sock:
            for chunk in split_lines(message, UDP_DATAGRAM_BYTES):
                sock.sendto(chunk, addr)


def split_lines(payload: bytes, limit: int) -> list[bytes]:
    """Cut ``payload`` into chunks of at most ``limit`` bytes, only between lines."""
    out: list[bytes] = []
    start = 0
    n = len(payload)
    while start < n:
        end = start + limit
        if end >= n:
            out.append(payload[start:])
            break
        cut = payload.rfind(b"\n", start, end)
        if cut < start:  # one line longer than the limit: send it alone
            cut = payload.find(b"\n", end)
            if cut < 0:
                cut = n - 1
        out.append(payload[start:cut + 1])
        start = cut + 1
    return out


@dataclass
class ExportStats:
    points_sent: int = 0
    points_dropped: int = 0
    points_made: int = 0  # lines built; always = sent + dropped + still buffered
    send_errors: int = 0
    flushes: int = 0
    last_flush_ms: float = 0.0


SnapshotSink = Callable[[Snapshot], None]


class Exporter:
    """Flushes the collector every ``interval`` seconds to a sender and to sinks."""

    def __init__(self, collector: Collector, namer: Namer, sender: Any | None, *,
                 interval: int, clock: Clock | None = None, max_buffered_points: int = 100_000,
                 sinks: Iterable[SnapshotSink] = (), where: str = "Graphite") -> None:
        self.collector = collector
        self.namer = namer
        self.sender = sender
        self.interval = interval
        self.clock = clock or SystemClock()
        self.max_buffered = max_buffered_points
        self.sinks = list(sinks)
        #: called at every flush, in the flush thread (the profiler writes dumps here)
        self.hooks: list[Callable[[], None]] = []
        self.where = where
        self.stats = ExportStats()
        self._buffer: collections.deque[bytes] = collections.deque()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._dropping = False
        self._reported = ExportStats()  # what the self-metrics reported last time
        self.last_snapshot: Snapshot | None = None

    # -- thread --------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="callwatch-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        iv = self.interval
        while True:
            now = self.clock.time()
            nxt = (math.floor(now / iv) + 1) * iv
            if self._stop.wait(max(0.0, nxt - now) + 0.001):
                return
            try:
                self.flush()
            except Exception:  # never let the thread die; report and go on
                log.exception("callwatch: flush failed")

    def stop(self, timeout: float = 5.0) -> Snapshot | None:
        """Stop the thread and do the final flush; returns the final (partial) snapshot."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        return self.flush(final=True)

    def after_fork_in_child(self) -> None:
        """Threads don't survive fork: start our own, with new locks and an empty buffer.

        The buffered points belong to the parent, which still sends them.
        """
        was_running = self._thread is not None
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._buffer.clear()
        self.stats = ExportStats()
        self._reported = ExportStats()
        self._failing = self._dropping = False
        if was_running:
            self.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- flush ---------------------------------------------------------------------

    def flush(self, final: bool = False) -> Snapshot | None:
        """Swap the table if an interval has ended (always when ``final``) and send.

        Returns the snapshot that was swapped out, if any.
        """
        with self._flush_lock:
            t0 = time.perf_counter()
            now = self.clock.time()
            boundary = math.floor(now / self.interval) * self.interval
            start = self.collector.start
            snap = None
            if final or (start is not None and boundary > start):
                snap = self.collector.swap(boundary if start is None or boundary >= start else start)
                if final:
                    snap.end = max(now, snap.start)  # a partial interval ends now
                self.last_snapshot = snap
                for sink in self.sinks:
                    try:
                        sink(snap)
                    except Exception:
                        log.exception("callwatch: snapshot sink %r failed", sink)
            for hook in self.hooks:
                try:
                    hook()
                except Exception:
                    log.exception("callwatch: flush hook %r failed", hook)
            if self.sender is not None:
                if snap is not None:
                    self._enqueue(self.namer.points(snap) + self._self_points(snap), int(snap.start))
                self._send()
            self.stats.flushes += 1
            self.stats.last_flush_ms = (time.perf_counter() - t0) * 1000.0
            return snap

    def _self_points(self, snap: Snapshot | None = None) -> list[Point]:
        s, r = self.stats, self._reported
        values = {
            "spikes_active": len(snap.spikes) if snap is not None else 0,
            "points_sent": s.points_sent - r.points_sent,
            "points_dropped": s.points_dropped - r.points_dropped,
            "send_errors": s.send_errors - r.send_errors,
            "points_buffered": len(self._buffer),
            "flush_ms": round(s.last_flush_ms, 3),
            "internal_errors": self.collector.internal_errors,
        }
        self._reported = ExportStats(points_sent=s.points_sent, points_dropped=s.points_dropped,
                                     send_errors=s.send_errors)
        out: list[Point] = []
        for metric, value in values.items():
            n, t = self.namer.self_metric(metric)
            out.append((n, value, t))
        return out

    def _enqueue(self, points: list[Point], timestamp: int) -> None:
        build = self.sender.build_message  # type: ignore[union-attr]
        buf = self._buffer
        for name, value, tags in points:
            self.stats.points_made += 1
            try:
                buf.append(build(name, value, timestamp, tags=tags))
            except (ValueError, TypeError):
                self.stats.points_dropped += 1
        # Bound the buffer before sending (a send can take up to the timeout): the oldest
        # go first; the points of this flush are always kept for one attempt.
        self._trim(max(self.max_buffered, len(points)))

    def _send(self) -> None:
        buf = self._buffer
        sent_before = self.stats.points_sent
        while buf:
            lines: list[bytes] = []
            size = 0
            for line in buf:
                if lines and size + len(line) > TCP_BATCH_BYTES:
                    break
                lines.append(line)
                size += len(line)
            try:
                self.sender.send_message(b"".join(lines))  # type: ignore[union-attr]
            except Exception as e:
                self.stats.send_errors += 1
                if not self._failing:
                    self._failing = True
                    log.warning("callwatch: cannot send to %s (%s: %s); keeping up to %d points "
                                "and retrying at each flush", self.where, type(e).__name__, e,
                                self.max_buffered)
                break
            for _ in lines:
                buf.popleft()
            self.stats.points_sent += len(lines)
        else:
            if self._failing:
                self._failing = False
                log.warning("callwatch: %s reachable again; sent %d buffered points",
                            self.where, self.stats.points_sent - sent_before)
        self._trim(self.max_buffered)

    def _trim(self, keep: int) -> None:
        buf = self._buffer
        over = len(buf) - keep
        if over > 0:
            for _ in range(over):
                buf.popleft()
            self.stats.points_dropped += over
            if not self._dropping:
                self._dropping = True
                log.warning("callwatch: buffer of %d points full; dropping the oldest points "
                            "(counted in the points_dropped self-metric)", self.max_buffered)
        elif not self._failing:
            self._dropping = False

    @property
    def buffered(self) -> int:
        return len(self._buffer)
