"""Sampled full profiles of requests (``profile:`` in the config).

Mechanism: yappi on the request's thread, with a *tag per request context*.  When a request
is chosen, its context gets a tag (a ``ContextVar``) and yappi runs on that thread; yappi
asks for the tag at every function entry, so each call is attributed to the context that
made it.  The profile of the request is the stats filtered by its tag: other asyncio tasks
and other greenlets running meanwhile on the thread are left out, because they run in
other contexts, and other threads are not profiled at all (work a request hands to another
thread is therefore not in its profile).  cProfile
cannot do that: it has no notion of context, and from Python 3.12 on it records every
thread of the process (sys.monitoring), so a profile under a threaded server would mix
requests.

At most one request is profiled at a time per process.  Requests are chosen at random
(``rate``); a handler not profiled for ``min_interval`` seconds gets its next request
profiled, so rare handlers show up too; and the rate is lowered whenever profiled requests
took more than ``budget`` of the wall time in an interval.  Without ``profile:`` nothing
here is imported or run.
"""

from __future__ import annotations

import collections
import contextvars
import logging
import marshal
import math
import os
import random
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

from .config import ProfileConfig

log = logging.getLogger("callwatch")

__all__ = ["FuncRow", "ProfiledRequest", "Profiler", "func_label"]

_tag: contextvars.ContextVar[int] = contextvars.ContextVar("callwatch_profile_tag", default=0)


class FuncRow(NamedTuple):
    """One function in one profiled request (a tuple: ~90 of them per profiled request)."""

    label: str  # short and metric-safe: db.get_player, sqlite3.Cursor.execute, time.sleep
    calls: int
    primitive: int  # calls that were not recursive
    own_ns: int
    cum_ns: int


@dataclass
class ProfiledRequest:
    handler: str
    elapsed_ns: int
    wall: float
    rows: list[FuncRow]
    pstats: dict[Any, Any] | None = None  # for a dump (marshal-able, what pstats loads)


_OWN = os.path.dirname(os.path.abspath(__file__))
_METHOD = re.compile(r"^<method '([^']+)' of '([^']+)' objects>$")
_BUILTIN = re.compile(r"^<built-in method ([^>]+)>$")


def func_label(module: str, line: int, name: str, builtin: bool) -> str:
    """A short, stable name for a profiled function (not yet metric-safe)."""
    if builtin or line == 0:
        m = _METHOD.match(name)
        if m:
            return f"{m.group(2)}.{m.group(1)}"
        m = _BUILTIN.match(name)
        if m:
            return m.group(1)
        return name if module in ("builtins", "~", "") else f"{module}.{name}"
    stem = os.path.splitext(os.path.basename(module))[0]
    return f"{stem}.{name}"


class Profiler:
    def __init__(self, cfg: ProfileConfig, sink: Callable[[ProfiledRequest], None],
                 watched_calls: Callable[[list[Any]], dict[str, int]] | None = None) -> None:
        import yappi  # only when profiling is configured

        self.yappi = yappi
        self.cfg = cfg
        self.sink = sink
        self.watched_calls = watched_calls
        self.rate = cfg.rate
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._seq = 0
        self._last: dict[str, float] = {}
        self._on_demand: tuple[str, float] | None = None
        self._profiled_ns = 0
        self._began_ns = 0
        self._window_start = time.monotonic()
        self._min_on = cfg.min_interval > 0
        #: a handler last profiled before this (monotonic) time is due again; moved on at
        #: each flush, so min_interval is kept to within one interval
        self._due_before = self._window_start - cfg.min_interval
        self._skip = self._draw()
        #: (name, module, line) -> label (or "" for a frame not reported): labels are
        #: the same from one profiled request to the next, and a regex each costs ~1 us
        self._labels: dict[tuple[str, str, int], str] = {}
        self._dumps: collections.deque[tuple[str, float, int, dict[Any, Any]]] = collections.deque(maxlen=100)
        yappi.set_clock_type("wall")
        yappi.set_tag_callback(_tag.get)
        try:
            from gevent import monkey

            if monkey.is_module_patched("threading"):
                yappi.set_context_backend("greenlet")
        except ImportError:
            pass

    # -- request side ----------------------------------------------------------------

    def begin(self, name: str | None) -> tuple[int, contextvars.Token[int]] | None:
        """Start profiling the current request if it is chosen; None when it is not."""
        # Runs on every request: a countdown and, with min_interval, one dict lookup.
        n = self._skip - 1
        self._skip = n
        if n > 0 and self._on_demand is None:
            if not self._min_on:
                return None
            last = self._last.get(name)  # type: ignore[arg-type]
            if last is not None and last >= self._due_before:
                return None
        if not self._chosen(name):
            return None
        if not self._lock.acquire(blocking=False):
            return None  # another request is being profiled
        try:
            self._began_ns = time.perf_counter_ns()  # the budget counts the profiler's own cost too
            self._seq += 1
            tag = self._seq
            token = _tag.set(tag)
            self.yappi.clear_stats()
            # Only this thread: the request runs on it (its other tasks or greenlets are told
            # apart by the tag), and the server's other threads do not pay for the profiler
            # meanwhile.  On this thread alone a profiled request of benchmarks/macro.py costs
            # ~400 us more instead of ~590 us with every thread profiled.
            self.yappi.start(builtins=True, profile_threads=False)
            return tag, token
        except Exception:
            self._lock.release()
            return None

    def _chosen(self, name: str | None) -> bool:
        # The countdown ran out, or the handler is due (on demand, or min_interval).
        if self._skip <= 0:
            self._skip = self._draw()
            return True
        od = self._on_demand
        if od is not None:
            if time.monotonic() >= od[1]:
                self._on_demand = None
            elif name == od[0]:
                return True
        if name is not None and self._min_on:
            last = self._last.get(name)
            return last is None or last < self._due_before
        return False

    def _draw(self) -> int:
        """Requests until the next randomly chosen one: geometric with p = rate, the same
        as a coin per request, without a random number per request."""
        rate = self.rate
        if rate >= 1:
            return 1
        if rate <= 0:
            return sys.maxsize
        u = 1.0 - self._rng.random()  # (0, 1]
        return int(math.log(u) / math.log1p(-rate)) + 1

    def end(self, prof: tuple[int, contextvars.Token[int]], name: str, elapsed_ns: int,
            state: list[Any]) -> None:
        tag, token = prof
        try:
            self.yappi.stop()
            rows = self._rows(tag)
            dump = None
            if self._want_dump(elapsed_ns, state):
                stats = self.yappi.get_func_stats(filter={"tag": tag})
                dump = dict(self.yappi.convert2pstats(stats).stats)
            self.yappi.clear_stats()
        except Exception:
            log.exception("callwatch: reading a profile failed")
            return
        finally:
            _tag.reset(token)
            self._profiled_ns += time.perf_counter_ns() - self._began_ns
            self._lock.release()
        if len(self._last) < 10_000 or name in self._last:
            self._last[name] = time.monotonic()
        req = ProfiledRequest(name, elapsed_ns, time.time(), rows, dump)
        if dump is not None and self.cfg.dump_dir:
            self._dumps.append((name, req.wall, elapsed_ns, dump))
        self.sink(req)

    def _rows(self, tag: int) -> list[FuncRow]:
        # yappi's own get_func_stats() builds an object per function and per caller link:
        # ~1.7 ms for the ~90 functions of a request with 16 redis/sqlite calls.  Its C
        # enumerator hands out plain tuples in ~30 us, so that is read instead (the layout
        # is the one yappi's YFuncStat wraps: name, module, lineno, ncall, nactualcall,
        # builtin, ttot, tsub, ...); the slow path stays for an unknown yappi.
        raw: list[tuple[Any, ...]] = []
        enum = getattr(getattr(self.yappi, "_yappi", None), "enum_func_stats", None)
        if enum is not None:
            enum(raw.append, {"tag": tag})
        if enum is None or (raw and len(raw[0]) < 8):
            raw = [(s.name, s.module, s.lineno, s.ncall, s.nactualcall, s.builtin, s.ttot, s.tsub)
                   for s in self.yappi.get_func_stats(filter={"tag": tag})]
        labels = self._labels
        if len(labels) > 50_000:  # code loaded at run time without end: start over
            labels.clear()
        rows = []
        for fname, module, line, ncall, nactual, builtin, ttot, tsub, *_ in raw:
            key = (fname, module, line)
            label = labels.get(key)
            if label is None:
                # "": not reported (yappi's, callwatch's own frames, its generated wrappers)
                label = labels[key] = "" if (module.startswith(_OWN) or module.startswith("<callwatch wrapper")
                                             or module == "_yappi" or os.path.basename(module) == "yappi.py") \
                    else func_label(module, line, fname, bool(builtin))
            if label:
                rows.append(FuncRow(label, int(ncall), int(nactual), int(tsub * 1e9), int(ttot * 1e9)))
        return rows

    def _want_dump(self, elapsed_ns: int, state: list[Any]) -> bool:
        cfg = self.cfg
        if not cfg.dump_dir:
            return False
        if cfg.slow_ms is not None and elapsed_ns >= cfg.slow_ms * 1e6:
            return True
        if cfg.call_budget and self.watched_calls is not None:
            calls = self.watched_calls(state)
            return any(calls.get(fn, 0) > limit for fn, limit in cfg.call_budget.items())
        return cfg.slow_ms is None and not cfg.call_budget  # no criteria: keep every one

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._dumps.clear()
        self._profiled_ns = 0

    # -- flush side (the exporter's thread) ------------------------------------------

    def on_flush(self) -> None:
        self._due_before = time.monotonic() - self.cfg.min_interval
        self._adjust_rate()
        self._poll_trigger()
        self._write_dumps()

    def _adjust_rate(self) -> None:
        now = time.monotonic()
        wall = now - self._window_start
        if wall <= 0:
            return
        share = self._profiled_ns / (wall * 1e9)
        if share > self.cfg.budget:
            self.rate = self.rate * self.cfg.budget / share
        else:
            self.rate = min(self.cfg.rate, max(self.rate * 1.25, self.cfg.rate / 1000))
        self._skip = self._draw()  # at the new rate from now on (memoryless: a redraw is fair)
        self._profiled_ns = 0
        self._window_start = now

    def profile_now(self, handler: str, seconds: float) -> None:
        """Profile every request of ``handler`` (one at a time) for the next ``seconds``."""
        self._on_demand = (handler, time.monotonic() + seconds)

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

    def _write_dumps(self) -> None:
        root = Path(self.cfg.dump_dir) if self.cfg.dump_dir else None
        if root is None:
            return
        while self._dumps:
            handler, wall, elapsed_ns, stats = self._dumps.popleft()
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", handler)[:100] or "_"
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"
            path = root / safe / f"{stamp}-{elapsed_ns / 1e6:.0f}ms.prof"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(marshal.dumps(stats))
            except OSError as e:
                log.warning("callwatch: cannot write profile dump %s (%s)", path, e)
                continue
            self._retain(path.parent)
        self._cap_total(root)

    def _retain(self, folder: Path) -> None:
        dumps = sorted(folder.glob("*.prof"))
        for old in dumps[: max(0, len(dumps) - self.cfg.keep_per_handler)]:
            old.unlink(missing_ok=True)

    def _cap_total(self, root: Path) -> None:
        files = sorted(root.glob("*/*.prof"), key=lambda p: p.name)
        total = sum(p.stat().st_size for p in files)
        limit = self.cfg.max_dump_mb * 1024 * 1024
        for p in files:  # oldest first (names start with the UTC time)
            if total <= limit:
                break
            total -= p.stat().st_size
            p.unlink(missing_ok=True)
