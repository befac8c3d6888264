"""Sampled full profiles of requests (``profile:`` in the config).

Mechanism: yappi on the request's thread, with a *tag per request context*.  When a request
is chosen, its context gets a tag (a ``ContextVar``) and yappi runs on that thread; yappi
asks for the tag at every function entry, so each call is attributed to the context that
made it.  The profile of the request is the stats filtered by its tag: other asyncio tasks
running meanwhile on the thread are left out, because they run in other contexts; under
gevent, other greenlets are not even hooked (``_gate``: yappi runs only while the request's
greenlet does); and other threads are not profiled at all (work a request hands to another
thread is therefore not in its profile).  cProfile cannot do that: it has no notion of
context, and from Python 3.12 on it records every thread of the process (sys.monitoring),
so a profile under a threaded server would mix requests.

Which requests (``_policy``).  At most one request is profiled at a time per process.

- The countdown picks requests at random (``rate``); a pick is always kept.
- ``min_interval``: a handler not profiled for that long is *due*, and its next request is
  profiled, so rare handlers show up too.  ``profile_now`` / the trigger file make one
  handler due for a while (*on demand*).
- A request whose name is known only after routing (a middleware) begins with a *hint*
  instead: a string known at the start and stable per route (e.g. ``GET_users``).  The
  profiler remembers which final names each hint ended with (a bounded map, filled at the
  end of profiled requests).  A hint that is unknown, or whose names include a due or the
  on-demand handler, is profiled *provisionally*; at the end, the profile is kept only if
  the final name qualifies (it is due, or on demand).  A discarded profile gives no
  metrics, no dump and no min_interval update, but its cost counts in the budget.
- The budget: what profiling costs may take ``budget`` of the CPU time the process uses
  (``_policy.BUDGET_CLOCK`` says why not of the wall time).  A profiled
  request is charged what it cost (``cost_ns``: its thread's CPU time from ``begin`` to the
  end of ``end``, plus a calibrated share for the requests after it).  At each flush the
  rate is lowered when the charges took more, raised towards ``rate`` when they took less;
  and every pick (the countdown's, and those of min_interval, on demand and hints, which a
  scan of never-seen names would otherwise buy for every request) draws on a credit that
  grows by ``budget`` of that CPU time, holds at most one second's worth, and is spent by
  every profiled request: picks are refused while it is spent, so the budget holds
  between flushes too.  Once found spent, it is looked at again only after
  ``_policy.RECHECK`` refusals or at the next flush (a due handler asks on every request;
  a refusal then costs no clock read).
- After a fork, the child draws a new seed and countdown, so workers profile different
  requests.

What is read (``_reader``): the profiled code only, never callwatch's own frames, in the
metrics rows and in the pstats dumps.  Dumps (``_dumps``) go to bounded folders.  Costs are
measured by benchmarks/profiling.py; memory under profiling by benchmarks/soak_profiling.py.
Without ``profile:`` nothing here is imported or run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .._state import State
from ..config import ProfileConfig
from ._dumps import DumpStore
from ._policy import AFTER_SHARE, NO, PROVISIONAL, SamplingPolicy
from ._reader import FuncRow, ProfileReader, Stats, func_label, tag_var

log = logging.getLogger("callwatch")

__all__ = ["FuncRow", "ProfiledRequest", "Profiler", "cost_ns", "func_label"]

#: What ``begin`` hands out and ``end`` takes back: (tag, context token, kind, hint).
Token = tuple[int, Any, int, "str | None"]


@dataclass
class ProfiledRequest:
    """One profiled request: its handler, duration, when it was read (``wall``), its rows
    per function, and for a dump its pstats data."""

    handler: str
    elapsed_ns: int
    wall: float
    rows: list[FuncRow]
    pstats: dict[Any, Any] | None = None  # for a dump (marshal-able, what pstats loads)


class Profiler:
    """Profiles chosen requests: ``begin`` at the start, ``end`` with the final name."""

    def __init__(self, cfg: ProfileConfig, sink: Callable[[ProfiledRequest], None],
                 watched_calls: Callable[[State], dict[str, int]] | None = None,
                 max_handlers: int = 200) -> None:
        import yappi  # only when profiling is configured

        self.cfg = cfg
        self.sink = sink
        self.policy = SamplingPolicy(cfg, max_handlers)
        self.reader = ProfileReader(yappi)
        self.dumps = DumpStore(cfg, max_handlers, watched_calls)
        self._choose = self.policy.choose
        #: what the C handler wrapper reads to skip ``begin`` (``_policy.PySkip``), as
        #: ``_request.profiler_skip``: configure() sets both
        self.skip = self.policy.skips
        self.skip.owner = id(self)
        self._stop = self.reader.stop
        self._lock = threading.Lock()
        self._seq = 0
        self._began: tuple[int, int, int] = (0, 0, 0)  # thread, its CPU clock, wall clock

    # -- request side ----------------------------------------------------------------

    def begin(self, name: str | None, hint: str | None = None) -> Token | None:
        """Start profiling the current request if it is chosen; None when it is not.

        ``name``: the handler, or None when the framework has not routed the request yet;
        then ``hint`` (stable per route) stands for it until ``end`` gets the name.
        """
        kind = self._choose(name, hint)
        if kind == NO:
            return None
        if not self._lock.acquire(blocking=False):
            return None  # another request is being profiled
        try:
            self._began = (threading.get_ident(), time.thread_time_ns(), time.perf_counter_ns())
            self._seq += 1
            tag = self._seq
            token = tag_var.set(tag)
            try:
                self.reader.start()
            except BaseException:
                tag_var.reset(token)
                raise
            return tag, token, kind, hint
        except Exception:
            self._lock.release()
            return None

    def end(self, token: Token, name: str, elapsed_ns: int, state: State) -> None:
        """End the profile that ``begin`` started; ``name`` is the request's final name."""
        # Stopped first, in a frame with few names: on Python 3.11 each profiled function
        # costs yappi a tuple of its local names per request (docs/notes/yappi-leak.md).
        began = self._began  # read while this request still holds the lock
        try:
            self._stop()
        finally:
            try:
                self._finish(token, name, elapsed_ns, state)
            finally:
                self.policy.charge(cost_ns(began, self.reader.away_ns()))

    def _finish(self, token: Token, name: str, elapsed_ns: int, state: State) -> None:
        tag, ctx_token, kind, hint = token
        policy = self.policy
        stats: list[Stats] | None = None
        try:
            raw = self.reader.collect()
            try:
                if hint is not None:
                    policy.learn(hint, name)
                if kind != PROVISIONAL or policy.qualifies(name):
                    stats = self.reader.read(raw, tag)
            finally:
                self.reader.clear(raw)
        except Exception:
            log.exception("callwatch: reading a profile failed")
            return
        finally:
            tag_var.reset(ctx_token)
            try:
                self._lock.release()
            except RuntimeError:  # a child forked during this request has a new lock
                pass
        if stats is not None:
            self._keep(name, elapsed_ns, state, stats)

    def _keep(self, name: str, elapsed_ns: int, state: State, stats: list[Stats]) -> None:
        self.policy.profiled(name)
        rows = [FuncRow(s.label, s.calls, int(s.own_s * 1e9), int(s.cum_s * 1e9)) for s in stats]
        dump = None
        if self.dumps.wanted(elapsed_ns, state):
            dump = {s.key: (s.primitive, s.calls, s.own_s, s.cum_s, s.callers) for s in stats}
        req = ProfiledRequest(name, elapsed_ns, time.time(), rows, dump)
        if dump is not None:
            self.dumps.add(name, req.wall, elapsed_ns, dump)
        self.sink(req)

    def profile_now(self, handler: str, seconds: float) -> None:
        """Profile every request of ``handler`` (one at a time) for the next ``seconds``."""
        self.policy.profile_now(handler, seconds)

    def after_fork_in_child(self) -> None:
        """A forked child: a new lock, no dumps queued (they are the parent's), sampling
        and budget of its own."""
        self._lock = threading.Lock()
        # A request profiled across the fork costs this process from the fork on (its
        # thread's CPU clock started again: no thread matches, so the wall clock counts).
        self._began = (0, 0, time.perf_counter_ns())
        self.dumps.clear()
        self.policy.after_fork_in_child()
        self.reader.after_fork_in_child()

    # -- flush side (the exporter's thread) ------------------------------------------

    def on_flush(self) -> None:
        """At each tick of the flush clock: the sampling rate and budget updated, the
        trigger file read, the queued dumps written."""
        self.policy.on_flush()
        self._poll_trigger()
        self.dumps.write()

    def _poll_trigger(self) -> None:
        path = self.cfg.trigger_file
        if not path or not os.path.exists(path):
            return
        try:
            text = Path(path).read_text().split()
            os.unlink(path)
            handler, seconds = text[0], float(text[1]) if len(text) > 1 else 60.0
        except (OSError, ValueError, IndexError) as e:
            log.warning("callwatch: ignoring trigger file %s (%s); write 'HANDLER SECONDS' in it", path, e)
            return
        log.warning("callwatch: profiling every request of %s for %.0f s (trigger file)", handler, seconds)
        self.profile_now(handler, seconds)


def cost_ns(began: tuple[int, int, int], away_ns: int = 0) -> int:
    """What one profiled request cost, for the budget: the CPU time of its thread from
    ``begin`` to the end of ``end`` (yappi's start, every call it timed, the reading, the
    rows and the dump), times ``1 + AFTER_SHARE`` for what the requests after it pay.

    The request's own work is in it too: it cannot be told apart from yappi's, so the
    charge is an upper bound (exact for the profiler's part, the request's unprofiled CPU
    time over; for a handler that mostly waits, little).  CPU time, not wall time: time
    spent waiting for I/O or for the GIL held by other threads costs the server nothing.
    A request that ended on another thread than it began is charged its wall time.
    ``away_ns``: the thread's CPU time meanwhile spent on other greenlets (under gevent,
    where waiting for I/O means running the others), left out; the gate's own calls on
    their switches are not in it (``_gate.SWITCH_NS``), so they are charged.
    """
    thread, cpu0, wall0 = began
    spent = time.perf_counter_ns() - wall0
    if threading.get_ident() == thread:
        cpu = time.thread_time_ns() - cpu0 - away_ns
        if 0 <= cpu <= spent:
            spent = cpu
    return int(spent * (1.0 + AFTER_SHARE))
