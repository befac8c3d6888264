"""Garbage-collector pauses and the process's memory, beside the response times.

``memory:`` in the config; without it nothing here is imported or run.

**GC pauses** (``memory.gc``, a ``gc.callbacks`` hook).  A collection runs in the thread
whose allocation triggered it, in the middle of whatever that thread was doing, so the
request context current when it starts says whose request paid for it.  Each collection
is recorded through the one request lifecycle (``aggregate``), so partial intervals,
forks and worker restarts treat it like every other count:

- in the paying request's state, under the runtime entry ``gc`` (count: collections, ns:
  their pause): per handler, collections and GC ms per request and their share of the
  response time, beside the watched functions;
- as a background item of its own, under ``gc_gen<N>`` (count 1, ns: the pause: so the
  interval's max is the longest pause), ``gc_gen<N>_collected`` and
  ``gc_gen<N>_uncollectable`` (count: objects), and ``gc_outside`` when no request paid:
  per process and generation.

The hook only records numbers.  It takes no lock (a collection can start inside
callwatch's own locked code, or inside the host's) and folds nothing (the next fold adds
its items).  What it costs per collection: ``python benchmarks/memory.py``.

An exception raised in a gc callback is swallowed by the interpreter (it is printed as
"Exception ignored").  The hook raises none of its own; a signal handler's
``KeyboardInterrupt`` that lands in it is re-delivered to the main thread, so Ctrl-C is
not lost.

**Process memory** (``memory.process``): read by the flusher at each flush (never on a
request's path) from ``/proc/self/statm``, and from ``/proc/self/smaps_rollup`` (Linux
4.14+) at most once a minute (``ROLLUP_EVERY_S``), plus ``sys.getallocatedblocks()``.  /proc directly rather than psutil: psutil's USS and
PSS read the whole ``/proc/self/smaps``, many times slower on a large heap than
``smaps_rollup``, and it would be one more dependency for two files.
"""

from __future__ import annotations

import _thread
import gc
import json
import logging
import os
import sys
import time
from collections import Counter
from typing import Any, Callable

from . import _core, _state
from ._state import CALLS, DIMS, NAME, NS, new_record
from ._profiles import StableTop
from .aggregate import BACKGROUND, GC, GC_GENERATIONS, GC_OUTSIDE, Collector, Registry, Snapshot
from .naming import sanitize

log = logging.getLogger("callwatch")

__all__ = ["Census", "GcMeter", "MemoryGauges", "count_types", "read_memory"]


class GcMeter:
    """The ``gc.callbacks`` hook (see the module docstring): ``install`` / ``uninstall``."""

    def __init__(self, registry: Registry, collector: Collector,
                 clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.hook = _make_hook(registry, collector, clock)
        self._installed = False

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        self.hook(phase, info)

    def install(self) -> None:
        """Start timing collections (append the hook to ``gc.callbacks``); once only."""
        if not self._installed:
            gc.callbacks.append(self.hook)
            self._installed = True

    def uninstall(self) -> None:
        """Stop timing collections (remove the hook, if installed)."""
        if self._installed:
            self._installed = False
            try:
                gc.callbacks.remove(self.hook)
            except ValueError:  # the host cleared gc.callbacks
                pass

    def after_fork_in_child(self) -> None:
        """Forget a collection in flight at the fork (the request it ran in is the parent's)."""
        self.hook(AFTER_FORK, {})


#: What ``GcMeter.after_fork_in_child`` tells the hook: forget a collection in flight.
AFTER_FORK = "after fork"


def _make_hook(registry: Registry, collector: Collector, clock: Callable[[], int]) -> Callable[[str, Any], None]:
    """The hook as a closure: everything it reads per collection is a local of this frame
    (``python benchmarks/memory.py`` measures what it costs per collection)."""
    request_key = registry.runtime(GC).index
    outside_key = registry.runtime(GC_OUTSIDE).index
    gen_keys = [tuple(registry.runtime(name).index for name in names) for names in GC_GENERATIONS]
    push = collector.pending.append  # the same list for the collector's life
    current = _core._current.get
    record = _state.record
    fresh = new_record
    started: list[Any] = [0, None]  # the running collection: its start, and the request state then

    def hook(phase: str, info: dict[str, int]) -> None:
        try:
            if phase == "start":
                started[1] = current()
                started[0] = clock()  # last: the pause starts here
                return
            if phase != "stop":  # AFTER_FORK
                started[1] = None
                return
            pause = max(0, clock() - started[0])
            st = started[1]
            started[1] = None
            item: dict[int, Any] = {DIMS: 0, NAME: 0}  # a background item of its own (_state.new_state)
            if type(st) is dict:
                rec = record(st, request_key)
                rec[CALLS] += 1
                rec[NS] += pause
            else:
                rec = item[outside_key] = fresh()
                rec[CALLS], rec[NS] = 1, pause
            keys = gen_keys[info["generation"]]
            rec = item[keys[0]] = fresh()
            rec[CALLS], rec[NS] = 1, pause
            n = info["collected"]
            if n:
                rec = item[keys[1]] = fresh()
                rec[CALLS] = n
            n = info["uncollectable"]
            if n:
                rec = item[keys[2]] = fresh()
                rec[CALLS] = n
            push((BACKGROUND, -1, 0, item))
        except KeyboardInterrupt:
            _thread.interrupt_main()  # gc would swallow it: the main thread gets it again
        except BaseException:  # noqa: S110 - nothing may escape into gc (see the module docstring)
            pass

    return hook


#: USS and PSS (``/proc/self/smaps_rollup``) are read at most this often: the kernel walks
#: every mapped page for them, milliseconds on a heap of some hundred MB
#: (``python benchmarks/memory.py``); the last values are sent in between.
ROLLUP_EVERY_S = 60.0


def read_memory(rollup: bool = True) -> dict[str, float]:
    """The process's memory now: ``rss_mb`` and ``python_blocks``, and with ``rollup``
    ``uss_mb`` and ``pss_mb`` (what Linux gives)."""
    out: dict[str, float] = {"python_blocks": float(sys.getallocatedblocks())}
    try:
        with open("/proc/self/statm", "rb") as f:
            out["rss_mb"] = round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0), 3)
    except (OSError, ValueError, IndexError):
        pass
    if rollup:
        out.update(_rollup())
    return out


def _rollup() -> dict[str, float]:
    kb: dict[bytes, int] = {}
    try:
        with open("/proc/self/smaps_rollup", "rb") as f:
            for line in f.read().splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(b":") and parts[1].isdigit():
                    kb[parts[0][:-1]] = int(parts[1])
    except (OSError, ValueError):
        return {}
    out = {}
    if b"Pss" in kb:
        out["pss_mb"] = round(kb[b"Pss"] / 1024.0, 3)
    if b"Private_Clean" in kb:
        out["uss_mb"] = round((kb[b"Private_Clean"] + kb.get(b"Private_Dirty", 0)) / 1024.0, 3)
    return out


class MemoryGauges:
    """An exporter stage: the process's memory at the end of each interval."""

    def __init__(self) -> None:
        self._rollup: dict[str, float] = {}
        self._rollup_at = -ROLLUP_EVERY_S

    def __call__(self, snap: Snapshot) -> None:
        now = time.monotonic()
        due = now - self._rollup_at >= ROLLUP_EVERY_S
        got = read_memory(rollup=due)
        if due:
            self._rollup_at = now
            self._rollup = {k: got[k] for k in ("uss_mb", "pss_mb") if k in got}
        snap.gauges.update(self._rollup)
        snap.gauges.update(got)


#: Objects counted between two yields of the census (``time.sleep(0)``: the host's other
#: threads, or greenlets, run in between), so that the census holds the interpreter for
#: about a millisecond at a time rather than for the whole heap.
CENSUS_CHUNK = 10_000
#: A leak suspect has grown by at least this many objects over the window: a type that
#: creeps up by a handful (a lazily filled cache of classes) is not worth an alarm.
LEAK_MIN_OBJECTS = 100
#: Types remembered between censuses at most (a program that makes classes without end).
MAX_TYPES = 20_000


def count_types() -> dict[str, int]:
    """The objects the GC tracks, counted by type (``module.qualname``; builtins by their
    name), as objgraph's ``typestats`` counts them, yielding every ``CENSUS_CHUNK``."""
    # The types only, in one C-level pass: the objects themselves are not held while the
    # counting yields (their garbage would wait, and collections meanwhile would promote it).
    types = list(map(type, gc.get_objects()))
    by_type: Counter[type] = Counter()
    for i in range(0, len(types), CENSUS_CHUNK):
        by_type.update(types[i:i + CENSUS_CHUNK])
        time.sleep(0)
    del types
    out: dict[str, int] = {}
    for t, n in by_type.items():
        name = _type_name(t)
        out[name] = out.get(name, 0) + n
    return out


def _type_name(t: type) -> str:
    module = getattr(t, "__module__", None)
    name = getattr(t, "__qualname__", None) or getattr(t, "__name__", "?")
    return str(name) if module in (None, "builtins") else f"{module}.{name}"


class NewHighs:
    """The suspect rule, for any counts by name: a *suspect* reached a new high (above
    every value of it seen so far) at each of the last ``window`` judgments, and grew by
    at least ``min_growth`` over them.  New highs, not mere growth: a steady server's
    counts go up and down within a band, where a new high gets rarer with every census,
    while a leak makes one at each."""

    def __init__(self, window: int, min_growth: int) -> None:
        self.window, self.min_growth = window, min_growth
        self._high: dict[str, int] = {}
        self.runs: dict[str, list[int]] = {}  # name -> its values at its current run of new highs

    def update(self, values: dict[str, int], judged: bool) -> list[str]:
        """This census's values -> the suspects (none unless ``judged``)."""
        high, runs, window = self._high, self.runs, self.window
        for name, n in values.items():
            h = high.get(name)
            if h is None and len(high) >= MAX_TYPES:
                continue
            if h is None or n > h:
                high[name] = n
                run = runs.setdefault(name, [])
                run.append(n)
                del run[:-window]
            else:
                runs.pop(name, None)
        for name in [k for k in runs if k not in values]:  # gone: no longer growing
            del runs[name]
        if not judged:
            return []
        return sorted(k for k, run in runs.items() if len(run) >= window and run[-1] - run[0] >= self.min_growth)


#: The process's RSS is a suspect when it grew by this many MB over the window, at a new
#: high each time (``NewHighs``): a heap that settles stops making new highs.
RSS_MIN_MB = 8
#: The suspect name of the RSS, beside the types.
RSS = "process RSS"


class Census:
    """An exporter stage: every ``census_every`` flushes, the objects counted by type, and
    the process's RSS.

    Sent: the top types by count (a stable set, ``StableTop``) with their count and growth
    since the last census, and every leak suspect (``NewHighs``: types that grew by
    ``LEAK_MIN_OBJECTS``, and the RSS by ``RSS_MIN_MB``).  Suspects are judged once
    ``2 x leak_window`` censuses were taken: the first ones all make new highs.
    """

    def __init__(self, every: int, top: int, window: int,
                 count: Callable[[], dict[str, int]] = count_types, web_url: str | None = None,
                 rss_kb: Callable[[], int | None] | None = None) -> None:
        self.every, self.top, self.window = every, top, window
        self._count = count
        self._rss_kb = rss_kb or _rss_kb
        self.web_url = web_url
        self._suspected: set[str] = set()
        self.new_suspects: list[str] = []
        self._event_failing = False
        self._flushes = 0
        self.censuses = 0
        self._last: dict[str, int] = {}
        self._types = NewHighs(window, LEAK_MIN_OBJECTS)
        self._rss = NewHighs(window, RSS_MIN_MB * 1024)
        self._stable = StableTop()

    def __call__(self, snap: Snapshot) -> None:
        self._flushes += 1
        if self._flushes % self.every:
            return
        t = time.perf_counter()
        counts = self._count()
        ms = (time.perf_counter() - t) * 1000.0
        snap.gauges.update(self.judge(counts))
        snap.gauges["census.ms"] = round(ms, 3)
        for name in self.new_suspects:
            self._tell(name, snap.start)

    def _tell(self, name: str, when: float) -> None:
        """A new suspect: one warning, and with ``graphite.web_url`` one Graphite event
        (tags: callwatch, leak, the type or ``rss``), as a spike's start."""
        rss = name == RSS
        run = (self._rss if rss else self._types).runs.get(name, [0])
        unit = "KB" if rss else "objects"
        what = (f"callwatch: leak suspect {name}: a new high at each of the last {self.window} censuses, "
                f"{run[0]:,} -> {run[-1]:,} {unit}")
        log.warning("%s", what)
        if not self.web_url:
            return
        from .spikes import post_event

        try:
            post_event(self.web_url, what, ["callwatch", "leak", "rss" if rss else sanitize(name)],
                       json.dumps({"type": name, "counts": run}), when)
            self._event_failing = False
        except Exception as e:
            if not self._event_failing:
                self._event_failing = True
                log.warning("callwatch: cannot post the leak event to %s (%s)", self.web_url, e)

    def judge(self, counts: dict[str, int]) -> dict[str, float]:
        """One census's counts -> the gauges to send (``types.<type>.count``...)."""
        self.censuses += 1
        judged = self.censuses >= 2 * self.window
        suspects = self._types.update(counts, judged)
        rss = self._rss_kb()
        rss_suspect = bool(self._rss.update({RSS: rss}, judged)) if rss is not None else False
        everything = suspects + ([RSS] if rss_suspect else [])
        #: suspects that were not at the last census (``judge``'s caller tells them)
        self.new_suspects = [k for k in everything if k not in self._suspected]
        self._suspected = set(everything)
        ranked = sorted(counts, key=lambda k: -counts[k])
        shown = self._stable.pick(ranked, self.top, self.censuses)
        shown += [k for k in suspects if k not in shown]
        out: dict[str, float] = {"census.objects": float(sum(counts.values())), "leak_suspects": len(everything),
                                 "rss_suspect": 1.0 if rss_suspect else 0.0}
        last, first = self._last, self.censuses == 1
        for name in shown:
            key = "types." + sanitize(name)
            out[key + ".count"] = counts[name]
            if not first:  # a type absent from the last census had none
                out[key + ".growth"] = counts[name] - last.get(name, 0)
            out[key + ".suspect"] = 1.0 if name in suspects else 0.0
        self._last = counts if len(counts) <= MAX_TYPES else {k: counts[k] for k in ranked[:MAX_TYPES]}
        return out


def _rss_kb() -> int | None:
    mb = read_memory(rollup=False).get("rss_mb")
    return None if mb is None else int(mb * 1024)
