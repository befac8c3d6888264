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
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Protocol

import graphyte

from .aggregate import BACKGROUND, Collector, HandlerStats, Snapshot, share
from .config import Config

__all__ = ["Clock", "Exporter", "GraphyteSender", "Namer", "SystemClock", "sanitize"]

log = logging.getLogger("callwatch")

#: Largest payload per TCP connection (one connection per flush, unless carbon was down
#: and a large backlog is being resent), and per UDP datagram.
TCP_BATCH_BYTES = 1024 * 1024
UDP_DATAGRAM_BYTES = 1400

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_NAME = 120


def sanitize(name: str) -> str:
    """One Graphite path component: ``[A-Za-z0-9_-]`` only, at most 120 characters."""
    safe = _UNSAFE.sub("_", name)[:MAX_NAME]
    return safe or "_"


class Clock(Protocol):
    def time(self) -> float: ...


class SystemClock:
    def time(self) -> float:
        return time.time()


# --------------------------------------------------------------------------------------
# Naming


Point = tuple[str, float, Mapping[str, str]]

RESPONSE_STATS = ("mean", "max", "p50", "p90", "p99")
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


class Namer:
    """Turns a snapshot into (metric, value, tags) points; see README "Metric names".

    Hierarchical (default)::

        <prefix>.<host>.handler.<handler>.requests
        <prefix>.<host>.handler.<handler>.watch.<function>.calls_per_request.mean

    Tagged (``graphite.tags: true``)::

        <prefix>.requests;handler=<handler>;host=<host>
        <prefix>.watch.calls_per_request.mean;function=<function>;group=<group>;handler=...
    """

    def __init__(self, prefix: str, host: str, *, tags: bool = False,
                 rename: Mapping[str, str] | None = None, worker: str = "") -> None:
        self.prefix = prefix
        self.host = host
        self.worker = worker
        self.tags = tags
        self.rename = dict(rename or {})
        # One path component for "who sent it": web1_w0 (host and worker slot), so a single
        # wildcard sums over workers and hosts alike: callwatch.*.handler.login.requests
        origin = "_".join(p for p in (host, worker) if p)
        self._base = ".".join(p for p in (prefix, origin) if p)
        self._handler_names: dict[str, str] = {}

    @classmethod
    def from_config(cls, cfg: Config, worker: str = "") -> Namer:
        return cls(cfg.graphite.prefix, cfg.host, tags=cfg.graphite.tags, rename=cfg.handlers.rename,
                   worker=worker)

    def handler(self, raw: str) -> str:
        name = self._handler_names.get(raw)
        if name is None:
            name = sanitize(str(self.rename.get(raw, raw)))
            if len(self._handler_names) < 10_000:
                self._handler_names[raw] = name
        return name

    def _name(self, parts: Iterable[str]) -> str:
        return ".".join(p for p in parts if p)

    def handler_metric(self, handler: str, metric: str,
                       split: tuple[str, str] | None = None) -> tuple[str, Mapping[str, str]]:
        """Name and tags of a handler metric; ``split`` = (dimension, value)."""
        if self.tags:
            return (self._name((self.prefix, "by" if split else "", metric)),
                    self._tags(handler=handler, **self._split_tags(split)))
        return self._name((self._base, "handler", handler, *self._split_path(split), metric)), {}

    def watch_metric(self, handler: str, kind: str, what: str, group: str | None,
                     metric: str, split: tuple[str, str] | None = None) -> tuple[str, Mapping[str, str]]:
        """``kind`` is "watch" (``what`` = function) or "group" (``what`` = group)."""
        if self.tags:
            if kind == "watch":
                tags = self._tags(handler=handler, function=what, group=group or "", **self._split_tags(split))
            else:
                tags = self._tags(handler=handler, group=what, **self._split_tags(split))
            return self._name((self.prefix, "by" if split else "", kind, metric)), tags
        return self._name((self._base, "handler", handler, *self._split_path(split), kind, what, metric)), {}

    @staticmethod
    def _split_path(split: tuple[str, str] | None) -> tuple[str, ...]:
        return ("by", split[0], split[1]) if split else ()

    @staticmethod
    def _split_tags(split: tuple[str, str] | None) -> dict[str, str]:
        return {"dimension": split[0], "value": split[1]} if split else {}

    def profile_metric(self, handler: str, label: str, metric: str) -> tuple[str, Mapping[str, str]]:
        """``label`` "" for the handler's own profile metrics (requests)."""
        fn = sanitize(label) if label else ""
        if self.tags:
            return self._name((self.prefix, "profile", metric)), self._tags(handler=handler, function=fn)
        return self._name((self._base, "handler", handler, "profile", fn, metric)), {}

    def self_metric(self, metric: str) -> tuple[str, Mapping[str, str]]:
        if self.tags:
            return self._name((self.prefix, "callwatch", metric)), self._tags()
        return self._name((self._base, "callwatch", metric)), {}

    def _tags(self, **tags: str) -> dict[str, str]:
        if self.host:
            tags["host"] = self.host
        if self.worker:
            tags["worker"] = self.worker
        return {k: v for k, v in tags.items() if v}

    def points(self, snap: Snapshot) -> list[Point]:
        out: list[Point] = []
        # Names that sanitize (or rename) to the same metric path are merged, not sent twice.
        merged: dict[tuple[str, tuple[str, str] | None], HandlerStats] = {}
        for raw, hs in snap.handlers.items():
            key: tuple[str, tuple[str, str] | None]
            if isinstance(raw, tuple):
                key = (self.handler(raw[0]), (sanitize(str(raw[1])), sanitize(str(raw[2]))))
            else:
                key = (self.handler(raw), None)
            if key in merged:
                merged[key].merge(hs)
            else:
                merged[key] = hs
        entries = snap.entries
        for (h, split), hs in sorted(merged.items(), key=lambda kv: (kv[0][0], kv[0][1] or ("", ""))):
            background = h == BACKGROUND
            r = hs.requests
            if not background:
                for metric, count in (("requests", r), ("errors", hs.errors)):
                    n, t = self.handler_metric(h, metric, split)
                    out.append((n, count, t))
                if r:
                    values = {"mean": _ms(hs.ns / r), "max": _ms(hs.ns_max)}
                    for stat, q in QUANTILES.items():
                        values[stat] = _ms(hs.quantile_ns(q))
                    for stat in RESPONSE_STATS:
                        n, t = self.handler_metric(h, "response_ms." + stat, split)
                        out.append((n, values[stat], t))
            for k, fs in sorted(hs.funcs.items(), key=lambda kv: entries[kv[0]].name):
                e = entries[k]
                kind, what = ("group", e.name) if e.is_group else ("watch", e.name)
                vals: list[tuple[str, float]] = [("calls", fs.calls), ("ms", _ms(fs.ns))]
                if r and not background:
                    vals += [
                        ("calls_per_request.mean", round(fs.calls / r, 6)),
                        ("calls_per_request.max", fs.calls_max),
                        ("ms_per_request.mean", _ms(fs.ns / r)),
                        ("ms_per_request.max", _ms(fs.ns_max)),
                        ("share", round(share(fs.ns, hs.ns), 3)),
                    ]
                for metric, value in vals:
                    n, t = self.watch_metric(h, kind, what, e.group, metric, split)
                    out.append((n, value, t))
        for (raw, fname, is_group), ratio in sorted(snap.spikes.items()):
            n, t = self.watch_metric(self.handler(raw), "group" if is_group else "watch", fname, None, "spike")
            out.append((n, round(min(ratio, 1e6), 3), t))
        for raw, ps in sorted(snap.profiles.items()):
            h = self.handler(raw)
            n, t = self.profile_metric(h, "", "requests")
            out.append((n, ps.requests, t))
            r = ps.requests or 1
            for label in snap.profile_top.get(raw, ()):
                calls, own, cum = ps.funcs[label]
                for metric, value in (("calls_per_request", round(calls / r, 6)),
                                      ("ms_per_request", _ms(cum / r)),
                                      ("own_ms_per_request", _ms(own / r))):
                    n, t = self.profile_metric(h, label, metric)
                    out.append((n, value, t))
        return out


def _ms(ns: float) -> float:
    return round(ns / 1e6, 6)


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
