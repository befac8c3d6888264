"""Which requests are profiled: the countdown, ``min_interval``, on demand, hints, the budget.

The rule is written out in the package docstring (``callwatch.profiling``); this module is
its one implementation.  ``choose`` runs on every request and must stay cheap: a countdown
and, with ``min_interval`` on, one dict lookup; a clock is read only for a candidate.
"""

from __future__ import annotations

import math
import random
import sys
import time

from .._state import speedups
from ..config import ProfileConfig

#: What ``choose`` says about a request.
NO, SURE, PROVISIONAL = 0, 1, 2

#: Final names remembered per hint: a hint is stable per route, so a few are plenty;
#: beyond them a hint's new names are not learned (its known ones still decide).
NAMES_PER_HINT = 8

#: Every pick draws on a credit that grows by ``budget`` of the budget's clock and is spent
#: by every profiled request; it holds at most this many seconds' worth, so that a rare
#: handler can be profiled at once (at start, after a quiet spell) but a scan cannot
#: borrow ahead.
BURST_S = 1.0

#: Picks refused without a look at the budget's clock once its credit is found spent
#: (``SamplingPolicy.affordable``): one system call per this many requests of a due handler.
#: Few, because the countdown's picks come 1/rate requests apart: a spent credit must be
#: seen earned back soon without a flush (``configure(start_thread=False)``).
RECHECK = 16

#: What the requests after a profiled one pay, as a share of the profiled request's own
#: cost (``cost_ns``): caches and the interpreter's specialised code warm up again, and the
#: profile's rows are added to the table by a later fold.  Calibrated, not measured per
#: request: ``python benchmarks/profiling.py`` measures it (its ``after`` column: the CPU
#: time of the requests that follow a profiled one, against the same requests after an
#: unprofiled one), on 3.11 and 3.13; this is above what it printed there, with a margin
#: for its noise.
AFTER_SHARE = 0.20

#: The budget is a share of the CPU time the process uses, not of the wall time: what
#: profiling costs is CPU, and the throughput it takes from a busy process is its share of
#: the CPU the process gets (on a loaded machine, or under the GIL with several threads,
#: the wall time runs far ahead of it, and a share of it would let profiling take more).
#: An idle process profiles less; ``min_interval`` picks still draw on the credit held.
BUDGET_CLOCK = time.process_time


class PySkip:
    """The requests the policy surely skips, as the C handler wrapper reads them (the C
    extension's ``Skip`` when it is in use; the Python wrappers ask ``choose``): the
    countdown (``left``), ``ask`` while a profile on demand is asked for, and ``recent``,
    the handlers profiled within min_interval (``SamplingPolicy.last``, None without
    min_interval).  A handler named at the start skips ``choose`` while ``left`` stays
    above 1, ``ask`` is 0 and it is in ``recent``: ``choose`` would say NO."""

    __slots__ = ("left", "ask", "recent", "owner")

    def __init__(self) -> None:
        self.left = 0
        self.ask = 0
        self.recent: dict[str, float] | None = None
        self.owner = 0  #: id() of the profiler it belongs to (the wrapper checks it)


Skip: type[PySkip] = speedups.Skip if speedups is not None else PySkip


class SamplingPolicy:
    """Decides which requests to profile and keeps the profiled time within the budget."""

    def __init__(self, cfg: ProfileConfig, max_names: int) -> None:
        self.cfg = cfg
        self.rate = cfg.rate
        self.max_names = max_names
        self.rng = random.Random()
        self.min_on = cfg.min_interval > 0
        #: the budget's clock: the process's CPU time (see ``BUDGET_CLOCK``), as it is now
        self.clock = BUDGET_CLOCK
        self.window_start = self.clock()
        #: a handler last profiled before this (monotonic) time is due again; moved on at
        #: each flush, so min_interval is kept to within one interval
        self.due_before = time.monotonic() - cfg.min_interval
        #: handler -> when it was last profiled; only names profiled within min_interval
        #: (older ones are due, the same as absent), so hostile names do not pile up.
        #: Never rebound: ``skip.recent`` is this dict.
        self.last: dict[str, float] = {}
        self.skips: PySkip = Skip()
        self.skips.recent = self.last if self.min_on else None
        self._on_demand: tuple[str, float] | None = None
        #: hint -> final names seen at the end of its profiled requests
        self.hints: dict[str, list[str]] = {}
        self.spent_ns = 0  # what profiled requests cost in this window (``charge``)
        self.credit_ns = cfg.budget * BURST_S * 1e9
        self.credit_at = self.window_start
        #: the credit was found spent: this many more picks are refused without reading
        #: the budget's clock, or fewer if a flush finds it earned back (``affordable``)
        self.broke = 0
        self.skip = self.draw()

    @property
    def skip(self) -> int:
        """Requests until the countdown's pick (``skips.left``, shared with the C wrapper)."""
        return self.skips.left

    @skip.setter
    def skip(self, n: int) -> None:
        self.skips.left = n

    @property
    def on_demand(self) -> tuple[str, float] | None:
        """(handler, until when) while a profile on demand is asked for."""
        return self._on_demand

    @on_demand.setter
    def on_demand(self, value: tuple[str, float] | None) -> None:
        self._on_demand = value
        self.skips.ask = int(value is not None)

    # -- request side (any thread) ----------------------------------------------------

    def choose(self, name: str | None, hint: str | None) -> int:
        """NO, SURE, or PROVISIONAL (profile, and keep only if the final name qualifies)."""
        sk = self.skips
        n = sk.left - 1
        sk.left = n
        if n <= 0:
            sk.left = self.draw()
            return SURE if self.affordable() else NO
        if self.on_demand is not None:
            return self._choose_on_demand(name, hint)
        if not self.min_on:
            return NO
        # Per request under min_interval: a lookup or two, no call, no clock.
        last, due = self.last, self.due_before
        if name is not None:
            t = last.get(name)
            if t is not None and t >= due:
                return NO
            return SURE if self.affordable() else NO
        if hint is None:
            return NO  # nothing to decide by: only the countdown picks it
        names = self.hints.get(hint)
        if names is not None:
            for known in names:
                t = last.get(known)
                if t is None or t < due:
                    break
            else:
                return NO  # every name this hint ended with was profiled recently
        return PROVISIONAL if self.affordable() else NO  # an unknown hint may be anything

    def _choose_on_demand(self, name: str | None, hint: str | None) -> int:
        if name is not None:
            return SURE if self.qualifies(name) and self.affordable() else NO
        if hint is None:
            return NO
        names = self.hints.get(hint)
        if names is not None and not any(self.qualifies(n) for n in names):
            return NO
        return PROVISIONAL if self.affordable() else NO

    def qualifies(self, name: str) -> bool:
        """Is ``name`` the on-demand handler, or due under min_interval?"""
        od = self.on_demand
        if od is not None:
            if time.monotonic() >= od[1]:
                self.on_demand = None
            elif name == od[0]:
                return True
        if not self.min_on:
            return False
        last = self.last.get(name)
        return last is None or last < self.due_before

    def affordable(self) -> bool:
        """May a pick start now?  Every pick spends the credit, so that the budget holds
        between flushes, and a scan of never-seen names cannot buy a profile per request.

        Once the credit is found spent, the next ``RECHECK`` picks are refused without
        reading the clock, unless a flush finds it earned back first (``on_flush``): the
        budget's clock is a system call, and a handler that is due (``min_interval``) asks
        on every request while the credit is spent, which after one costly profile lasts
        seconds (under gevent, a profile costs tens of requests)."""
        if self.broke:
            self.broke -= 1
            return False
        self._earn(self.clock())
        if self.credit_ns > 0:
            return True
        self.broke = RECHECK
        return False

    def _earn(self, now: float) -> None:
        """The credit earned since the last look: ``budget`` of the CPU time, up to a cap."""
        budget = self.cfg.budget
        self.credit_ns = min(self.credit_ns + (now - self.credit_at) * budget * 1e9, budget * BURST_S * 1e9)
        self.credit_at = now

    def charge(self, ns: int) -> None:
        """A profiled request's cost (kept or discarded): ``cost_ns``."""
        self.spent_ns += ns
        self.credit_ns -= ns
        if self.credit_ns <= 0:
            self.broke = RECHECK

    def learn(self, hint: str, name: str) -> None:
        names = self.hints.get(hint)
        if names is None:
            if len(self.hints) < self.max_names:
                self.hints[hint] = [name]
        elif name not in names and len(names) < NAMES_PER_HINT:
            names.append(name)

    def profiled(self, name: str) -> None:
        if len(self.last) < self.max_names or name in self.last:
            self.last[name] = time.monotonic()

    def draw(self) -> int:
        """Requests until the next randomly chosen one: geometric with p = rate, the same
        as a coin per request, without a random number per request."""
        rate = self.rate
        if rate >= 1:
            return 1
        if rate <= 0:
            return sys.maxsize
        u = 1.0 - self.rng.random()  # (0, 1]
        return int(math.log(u) / math.log1p(-rate)) + 1

    def profile_now(self, handler: str, seconds: float) -> None:
        self.on_demand = (handler, time.monotonic() + seconds)

    def after_fork_in_child(self) -> None:
        # The parent's generator state and countdown were copied: without a new seed every
        # worker would profile the same request numbers.
        self.rng = random.Random()
        self.skip = self.draw()
        self.spent_ns = 0
        self.window_start = self.credit_at = self.clock()
        self.credit_ns = self.cfg.budget * BURST_S * 1e9  # a new process, a budget of its own
        self.broke = 0

    # -- flush side ------------------------------------------------------------------

    def on_flush(self) -> None:
        self.due_before = time.monotonic() - self.cfg.min_interval
        due = self.due_before
        last = self.last
        for k in [k for k, t in last.items() if t < due]:
            del last[k]  # in place: skips.recent is this dict
        now = self.clock()
        self._earn(now)
        self.broke = RECHECK if self.credit_ns <= 0 else 0
        self.adjust_rate(now)

    def adjust_rate(self, now: float) -> None:
        """``now``: the budget's clock."""
        used = now - self.window_start
        if used <= 0:
            return
        share = self.spent_ns / (used * 1e9)
        budget = self.cfg.budget
        if share > budget:
            self.rate = self.rate * budget / share
        else:
            # Up by a quarter at most, and never past what the last window says the
            # budget affords: overshooting it would make the average cost oscillate above.
            up = 1.25 if share <= 0 else min(1.25, budget / share)
            self.rate = min(self.cfg.rate, max(self.rate * up, self.cfg.rate / 1000))
        self.skip = self.draw()  # at the new rate from now on (memoryless: a redraw is fair)
        self.spent_ns = 0
        self.window_start = now
