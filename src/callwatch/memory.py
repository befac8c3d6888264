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
request's path) from ``/proc/self/statm`` and ``/proc/self/smaps_rollup`` (Linux 4.14+),
plus ``sys.getallocatedblocks()``.  /proc directly rather than psutil: psutil's USS and
PSS read the whole ``/proc/self/smaps``, many times slower on a large heap than
``smaps_rollup``, and it would be one more dependency for two files.
"""

from __future__ import annotations

import _thread
import gc
import logging
import os
import sys
import time
from typing import Any, Callable

from . import _core, _state
from ._state import CALLS, NS, new_record, new_state
from .aggregate import BACKGROUND, GC, GC_GENERATIONS, GC_OUTSIDE, Collector, Registry, Snapshot

log = logging.getLogger("callwatch")

__all__ = ["GcMeter", "gauge_stage", "read_memory"]


class GcMeter:
    """The ``gc.callbacks`` hook: see the module docstring.  ``install`` / ``uninstall``."""

    def __init__(self, registry: Registry, collector: Collector,
                 clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.request_key = registry.runtime(GC).index
        self.outside_key = registry.runtime(GC_OUTSIDE).index
        self.gen_keys = [tuple(registry.runtime(name).index for name in names) for names in GC_GENERATIONS]
        self._push = collector.pending.append  # the same list for the collector's life
        self._clock = clock
        self._current = _core._current.get
        self._record = _state.record
        self._t0 = 0
        self._state: Any = None
        self._installed = False

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            self._installed = False
            try:
                gc.callbacks.remove(self)
            except ValueError:  # the host cleared gc.callbacks
                pass

    def after_fork_in_child(self) -> None:
        self._state = None

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        try:
            if phase == "start":
                self._state = self._current()
                self._t0 = self._clock()  # last: the pause starts here
            else:
                self._stop(self._clock() - self._t0, info)
        except KeyboardInterrupt:
            _thread.interrupt_main()  # gc would swallow it: the main thread gets it again
        except BaseException:  # noqa: S110 - nothing may escape into gc (see above)
            pass

    def _stop(self, pause: int, info: dict[str, int]) -> None:
        st, self._state = self._state, None
        if pause < 0:
            pause = 0
        item = new_state()
        if type(st) is dict:
            rec = self._record(st, self.request_key)
            rec[CALLS] += 1
            rec[NS] += pause
        else:
            rec = item[self.outside_key] = new_record()
            rec[CALLS], rec[NS] = 1, pause
        gen = info.get("generation", 0)
        if 0 <= gen < len(self.gen_keys):
            collections, collected, uncollectable = self.gen_keys[gen]
            rec = item[collections] = new_record()
            rec[CALLS], rec[NS] = 1, pause
            for key, n in ((collected, info.get("collected", 0)), (uncollectable, info.get("uncollectable", 0))):
                if n:
                    rec = item[key] = new_record()
                    rec[CALLS] = n
        self._push((BACKGROUND, -1, 0, item))


def read_memory() -> dict[str, float]:
    """The process's memory now: ``rss_mb``, ``uss_mb``, ``pss_mb`` (what Linux gives) and
    ``python_blocks``."""
    out: dict[str, float] = {"python_blocks": float(sys.getallocatedblocks())}
    mb = 1024.0 * 1024.0
    try:
        with open("/proc/self/statm", "rb") as f:
            out["rss_mb"] = round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / mb, 3)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/proc/self/smaps_rollup", "rb") as f:
            kb = {}
            for line in f.read().splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(b":") and parts[1].isdigit():
                    kb[parts[0][:-1]] = int(parts[1])
        if b"Pss" in kb:
            out["pss_mb"] = round(kb[b"Pss"] / 1024.0, 3)
        if b"Private_Clean" in kb:
            out["uss_mb"] = round((kb[b"Private_Clean"] + kb.get(b"Private_Dirty", 0)) / 1024.0, 3)
    except (OSError, ValueError):
        pass
    return out


def gauge_stage(snap: Snapshot) -> None:
    """An exporter stage: the process's memory at the end of the interval."""
    snap.gauges.update(read_memory())
