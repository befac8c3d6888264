"""When the demo's table grows from 2 to 7 players: only between two flushes, and with
every round whole inside one interval (see :class:`Phases`)."""

from __future__ import annotations

import math
import threading
import time

#: the table sizes, before and after
PHASES = (2, 7)


class Phases:
    """The table size, switched only between two flushes so that no interval mixes them.

    A round decides its table size when it starts.  At the first flush after the half-way
    time the workers are told to drain: each finishes its round and waits at the gate.  At
    a later flush, once every worker waits, the gate opens on 7-player rounds.  So the
    interval between those two flushes holds only the last 2-player rounds, and every
    snapshot is of one table size: the one ``at_flush`` returns for it.

    Rounds are also kept whole: none starts in the last ``quiet`` seconds before an
    interval's end, nor before that end's flush has happened, so each interval's requests
    are whole rounds (join_table's calls per request depend on who is already seated, so a
    round cut by a flush would show in both intervals' numbers).
    """

    def __init__(self, threads: int, switch_at: float, interval: float) -> None:
        self._cond = threading.Condition()
        self.threads = threads
        self.switch_at = switch_at
        self.interval = interval
        # a round takes milliseconds; a fifth of the interval is room for a slow machine
        self.quiet = min(0.5, interval / 5)
        self.flushed = self._start_of(time.time())  # where the collector's current interval began
        self.draining = False
        self.big = False
        self.waiting = 0
        self.last_small_end = 0.0
        self.first_big_start = float("inf")

    def at_flush(self, now: float) -> int:
        """Called by the flush thread right after a swap: the snapshot's table size."""
        with self._cond:
            players = PHASES[1] if self.big else PHASES[0]
            self.flushed = max(self.flushed, self._start_of(now))
            self._cond.notify_all()
            if self.draining and self.waiting == self.threads:
                self.draining, self.big = False, True
                self.first_big_start = now
                self._cond.notify_all()
            elif not self.big and not self.draining and now >= self.switch_at:
                self.draining = True
            return players

    def next_round(self, stop_at: float) -> int | None:
        """The table size of a worker's next round (None: time is up); waits at the gate,
        and out of each interval's quiet end."""
        with self._cond:
            while time.time() < stop_at:
                if self.draining:
                    self.waiting += 1
                    while self.draining and time.time() < stop_at:
                        self._cond.wait(0.05)
                    self.waiting -= 1
                elif self._may_start():
                    return PHASES[1] if self.big else PHASES[0]
                else:
                    self._cond.wait(0.01)
            return None

    def _start_of(self, t: float) -> float:
        return math.floor(t / self.interval) * self.interval  # as the flush clock aligns

    def _may_start(self) -> bool:
        now = time.time()
        start = self._start_of(now)
        return start <= self.flushed and start + self.interval - now >= self.quiet

    def small_done(self, t: float) -> None:
        with self._cond:
            self.last_small_end = max(self.last_small_end, t)
