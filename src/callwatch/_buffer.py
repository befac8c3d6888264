"""The send buffer: bounded, sent in batches, retried with the points' own timestamps.

A batch that fails stays in the buffer and is sent again at the next flush with its
original timestamps (carbon keeps the last value written for a name and timestamp, so
sending a point twice is harmless; losing one is not).  When the buffer is full the oldest
points go first, and every point dropped is counted.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass

from ._sender import TCP_BATCH_BYTES, Sender
from .naming import Point

__all__ = ["BufferStats", "SendBuffer"]

log = logging.getLogger("callwatch")


@dataclass
class BufferStats:
    points_made: int = 0  # lines built; always = sent + dropped + still buffered
    points_sent: int = 0
    points_dropped: int = 0
    send_errors: int = 0


class SendBuffer:
    """Lines waiting for carbon, at most ``max_points`` of them."""

    def __init__(self, sender: Sender, max_points: int, where: str) -> None:
        self.sender = sender
        self.max_points = max_points
        self.where = where
        self.stats = BufferStats()
        self._lines: collections.deque[bytes] = collections.deque()
        self._failing = False
        self._dropping = False

    def __len__(self) -> int:
        return len(self._lines)

    def clear(self) -> None:
        """Forget every line and count (a forked child: the lines are the parent's to send)."""
        self._lines.clear()
        self.stats = BufferStats()
        self._failing = self._dropping = False

    def add(self, points: list[Point], timestamp: int) -> None:
        build = self.sender.build_message
        lines = self._lines
        for name, value, tags in points:
            self.stats.points_made += 1
            try:
                lines.append(build(name, value, timestamp, tags=tags))
            except (ValueError, TypeError):
                self.stats.points_dropped += 1
        # Bound the buffer before sending (a send can take up to the timeout): the oldest
        # go first; the points just added are always kept for one attempt.
        self._trim(max(self.max_points, len(points)))

    def send(self) -> None:
        """Send everything in batches; stop at the first failure and keep the rest."""
        lines = self._lines
        sent_before = self.stats.points_sent
        while lines:
            batch = self._next_batch()
            try:
                self.sender.send_message(b"".join(batch))
            except Exception as e:
                self.stats.send_errors += 1
                if not self._failing:
                    self._failing = True
                    log.warning("callwatch: cannot send to %s (%s: %s); keeping up to %d points "
                                "and retrying at each flush", self.where, type(e).__name__, e,
                                self.max_points)
                break
            for _ in batch:
                lines.popleft()
            self.stats.points_sent += len(batch)
        else:
            if self._failing:
                self._failing = False
                log.warning("callwatch: %s reachable again; sent %d buffered points",
                            self.where, self.stats.points_sent - sent_before)
        self._trim(self.max_points)

    def _next_batch(self) -> list[bytes]:
        batch: list[bytes] = []
        size = 0
        for line in self._lines:
            if batch and size + len(line) > TCP_BATCH_BYTES:
                break
            batch.append(line)
            size += len(line)
        return batch

    def _trim(self, keep: int) -> None:
        lines = self._lines
        over = len(lines) - keep
        if over > 0:
            for _ in range(over):
                lines.popleft()
            self.stats.points_dropped += over
            if not self._dropping:
                self._dropping = True
                log.warning("callwatch: buffer of %d points full; dropping the oldest points "
                            "(counted in the points_dropped self-metric)", self.max_points)
        elif not self._failing:
            self._dropping = False
