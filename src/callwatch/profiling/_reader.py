"""yappi, driven for one request at a time: start, stop, read the request's functions, clear.

What is read is the profiled code only.  Frames of callwatch's own (its modules, its
generated wrappers, yappi's), and builtins that only they called (the clock read that
times the request, yappi's own stop), are left out of the rows and the pstats dumps; a
builtin that user code also called keeps just the calls user code made, summed from its
callers.  The dumps' counts are put the way pstats reads them: (primitive calls, calls),
so the pstats header says "N function calls (P primitive calls)" with P <= N.

yappi 1.7.6 never releases the name and module objects of a profiled function when its
stats are cleared (docs/notes/yappi-leak.md: what, how to reproduce, how much).  Stats are
cleared after every profiled request, so that leak would grow with each one; the reader
checks once, at start, whether this yappi keeps them, and if so releases them itself
right after the clear, when yappi can no longer reach them.

From Python 3.12 on, yappi hooks every thread of the process even when told to profile
only the one that starts it, and then files the other threads' calls in that thread's
context: their calls interleave with the request's on one call stack, the request's
counts come out wrong (a deal with 7 players read as 6.95 get_player calls) and yappi
prints "Internal Error. [15]" on every event.  So there the reader asks for a context per
thread, which keeps the other threads' calls apart (their tag is not the request's), and
then takes yappi's hook off the other threads, so they do not pay for the profile.

Under gevent, the other greenlets of the request's thread do not pay either: yappi runs
only while the request's own greenlet does (``_gate``).
"""

from __future__ import annotations

import contextvars
import ctypes
import os
import re
import sys
from typing import Any, Callable, NamedTuple

from ._gate import GreenletGate, context_id

#: The profiled request's tag: yappi asks for it at every function entry.
tag_var: contextvars.ContextVar[int] = contextvars.ContextVar("callwatch_profile_tag", default=0)

_OWN = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The demo's card-game server ships inside the package but is profiled code, not ours.
_DEMO = os.path.join(_OWN, "demo") + os.sep
_METHOD = re.compile(r"^<method '([^']+)' of '([^']+)' objects>$")
_BUILTIN = re.compile(r"^<built-in method ([^>]+)>$")

#: Labels cached at most this many: code loaded at run time without end starts over.
MAX_LABELS = 50_000

# yappi's C enumerator hands out plain tuples (much cheaper than get_func_stats(), which
# builds an object per function and per caller link: benchmarks/profiling.py); the layout
# is the one yappi's YFuncStat wraps.
_NAME, _MODULE, _LINE, _NCALL, _NACTUAL, _BUILTIN_FLAG, _TTOT, _TSUB, _INDEX, _CHILDREN = range(10)
_TAG = 12


class FuncRow(NamedTuple):
    """One function in one profiled request."""

    label: str  # short and metric-safe: db.get_player, sqlite3.Cursor.execute, time.sleep
    calls: int
    own_ns: int
    cum_ns: int


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
    if stem == "__init__":  # a package's own functions: json.dumps, not __init__.dumps
        stem = os.path.basename(os.path.dirname(module)) or stem
    return f"{stem}.{name}"


def is_own(module: str) -> bool:
    """A function of callwatch's own, or of yappi's."""
    return ((module.startswith(_OWN) and not module.startswith(_DEMO)) or module.startswith("<callwatch wrapper")
            or module == "_yappi" or os.path.basename(module) == "yappi.py")


class Stats(NamedTuple):
    """One profiled function, as the profiled code used it."""

    key: tuple[str, int, str]  # what pstats calls it: (file, line, name)
    label: str
    calls: int
    primitive: int
    own_s: float
    cum_s: float
    callers: dict[tuple[str, int, str], tuple[int, int, float, float]]


class ProfileReader:
    def __init__(self, yappi: Any) -> None:
        self.yappi = yappi
        self._enum: Callable[..., Any] = yappi._yappi.enum_func_stats
        self._labels: dict[tuple[str, str, int], str] = {}
        yappi.set_clock_type("wall")
        hooks_all = sys.version_info >= (3, 12)
        self._unhook_others = _unhook_other_threads() if hooks_all else None
        self._gate = _greenlet_gate(yappi, self._unhook_others)
        # Under the gate yappi runs only while the request's greenlet does, so everything
        # it records is the request's: no tag is asked for at each function entry (a
        # callback per call, about a tenth of a profiled gevent request's CPU time in a
        # /tmp measurement); its stats all carry tag 0.
        yappi.set_tag_callback(tag_var.get if self._gate is None else None)
        # yappi.start's own flag, without the threading.setprofile it also sets (and
        # yappi.stop clears, even when the host had set it): new threads are not profiled.
        # Under the gate the context is the thread's, so one context per thread anyway.
        self._contexts = hooks_all and self._gate is None
        self._start_yappi: Callable[[bool, bool], None] = yappi._yappi.start
        self.stop: Callable[[], None] = yappi._yappi.stop if self._gate is None else self._gate.stop
        self._release = _yappi_keeps_names(yappi, self.start, self.stop)
        self._decref = _decref() if self._release else None

    def start(self) -> None:
        """Profile this thread: the request runs on it (its other tasks or greenlets are
        told apart by the tag), and the server's other threads do not pay meanwhile."""
        self.yappi.clear_stats()
        self._start_yappi(True, self._contexts)
        if self._unhook_others is not None:
            try:
                self._unhook_others()
            except BaseException:  # an audit hook refusing sys.setprofile, say
                self.stop()
                raise
        if self._gate is not None:
            self._gate.open()

    def away_ns(self) -> int:
        """The thread's CPU time spent on other greenlets during this profile (``_gate``)."""
        return 0 if self._gate is None else self._gate.away_ns

    def after_fork_in_child(self) -> None:
        # A request profiled on another thread of the parent has no thread here to end it.
        if self.yappi.is_running() and tag_var.get() == 0:
            self.stop()
            self.yappi.clear_stats()

    def collect(self) -> list[tuple[Any, ...]]:
        """Every function yappi saw (all tags), once it is stopped."""
        raw: list[tuple[Any, ...]] = []
        self._enum(raw.append, {})
        return raw

    def clear(self, raw: list[tuple[Any, ...]]) -> None:
        """Clear yappi's stats; ``raw`` (from ``stop``) holds the objects to release."""
        self.yappi.clear_stats()
        decref = self._decref
        if decref is not None:
            # After the clear: yappi has dropped the functions that pointed to these.
            for t in raw:
                decref(t[_NAME])
                decref(t[_MODULE])

    def read(self, raw: list[tuple[Any, ...]], tag: int) -> list[Stats]:
        """The profiled code's functions under ``tag`` (under the gate: all of them),
        callwatch's own left out."""
        if self._gate is not None:
            tag = 0
        mine = [t for t in raw if t[_TAG] == tag]
        by_index = {t[_INDEX]: t for t in mine}
        labels = self._labels
        if len(labels) > MAX_LABELS:
            labels.clear()
        own: set[int] = set()
        for t in mine:
            key = (t[_NAME], t[_MODULE], t[_LINE])
            label = labels.get(key)
            if label is None:
                label = labels[key] = "" if is_own(t[_MODULE]) else \
                    func_label(t[_MODULE], t[_LINE], t[_NAME], bool(t[_BUILTIN_FLAG]))
            if not label:
                own.add(t[_INDEX])
        callers: dict[int, dict[int, tuple[int, int, float, float]]] = {}
        for t in mine:
            if t[_INDEX] in own:
                continue
            for idx, ncall, nactual, ttot, tsub in t[_CHILDREN]:
                callers.setdefault(idx, {})[t[_INDEX]] = (ncall, nactual, ttot, tsub)
        return [s for t in mine if t[_INDEX] not in own
                for s in [_stats(t, labels, callers.get(t[_INDEX], {}), by_index)] if s is not None]


def _greenlet_gate(yappi: Any, after_start: Callable[[], None] | None) -> GreenletGate | None:
    """Under gevent (threading monkey-patched), the gate that hooks only the profiled
    request's greenlet (``_gate``), with yappi's context set to the thread's; else None."""
    try:
        from gevent import monkey
    except ImportError:
        return None
    if not monkey.is_module_patched("threading"):
        return None
    yappi._yappi.set_context_id_callback(context_id())
    return GreenletGate(yappi._yappi, after_start)


def _key(t: tuple[Any, ...]) -> tuple[str, int, str]:
    return (t[_MODULE], t[_LINE], t[_NAME])


def _stats(t: tuple[Any, ...], labels: dict[tuple[str, str, int], str],
           callers: dict[int, tuple[int, int, float, float]],
           by_index: dict[int, tuple[Any, ...]]) -> Stats | None:
    label = labels[(t[_NAME], t[_MODULE], t[_LINE])]
    calls, primitive, cum, own = t[_NCALL], t[_NACTUAL], t[_TTOT], t[_TSUB]
    if t[_BUILTIN_FLAG]:
        # A builtin's calls from callwatch's frames (or from the request's top, where
        # callwatch times it) are not the profiled code's: keep what its callers made.
        calls = sum(c[0] for c in callers.values())
        if not calls:
            return None
        primitive = sum(c[1] for c in callers.values())
        cum = sum(c[2] for c in callers.values())
        own = sum(c[3] for c in callers.values())
    by_key = {_key(by_index[i]): (c[1], c[0], c[3], c[2]) for i, c in callers.items() if i in by_index}
    return Stats(_key(t), label, int(calls), int(primitive), own, cum, by_key)


def _yappi_keeps_names(yappi: Any, start: Callable[[], None], stop: Callable[[], None]) -> bool:
    """Does this yappi keep the name objects of cleared functions?  Checked on a builtin
    method whose name yappi makes afresh: after the clear, it must have one reference
    less.  Anything but exactly "none less" turns the release off (never release twice)."""
    if yappi.is_running():
        return False
    start()
    probe_list: list[int] = []
    probe_list.append(0)  # a builtin method: yappi names it afresh
    stop()
    raw: list[tuple[Any, ...]] = []
    yappi._yappi.enum_func_stats(raw.append, {})
    probe = [t for t in raw if t[_BUILTIN_FLAG] and "append" in t[_NAME] and "list" in t[_NAME]]
    if len(probe) != 1:
        yappi.clear_stats()
        return False
    name, module = probe[0][_NAME], probe[0][_MODULE]
    before = sys.getrefcount(name), sys.getrefcount(module)
    yappi.clear_stats()
    after = sys.getrefcount(name), sys.getrefcount(module)
    del raw, probe
    keeps = before == after
    if keeps:  # release the probe's own, as every later clear will
        decref = _decref()
        decref(name)
        decref(module)
    return keeps


def _decref() -> Callable[[object], None]:
    # A prototype of our own: setting argtypes on ctypes.pythonapi.Py_DecRef would change
    # it for every other user of ctypes in the process.
    proto = ctypes.PYFUNCTYPE(None, ctypes.py_object)
    return proto(("Py_DecRef", ctypes.pythonapi))


def _unhook_other_threads() -> Callable[[], None] | None:
    """A function that takes the profile hook off every thread but the calling one.

    What PyEval_SetProfileAllThreads (yappi's way to set it) does for each thread, with no
    hook.  A thread that yappi meets before this is done gets its own context, so the worst
    a thread switch in between does is let that thread pay until the profile ends.
    """
    api, ptr = ctypes.pythonapi, ctypes.c_void_p

    def c(name: str, restype: Any, *argtypes: Any) -> Any:
        # Prototypes of our own, as in _decref: ctypes.pythonapi's are shared.
        return ctypes.PYFUNCTYPE(restype, *argtypes)((name, api))

    try:
        this_thread, interpreter = c("PyThreadState_Get", ptr), c("PyInterpreterState_Get", ptr)
        first, following = c("PyInterpreterState_ThreadHead", ptr, ptr), c("PyThreadState_Next", ptr, ptr)
        set_profile = c("_PyEval_SetProfile", ctypes.c_int, ptr, ptr, ptr)
    except AttributeError:  # a Python without them: the other threads pay, counts stay right
        return None

    def unhook() -> None:
        me = this_thread()
        ts = first(interpreter())
        while ts:
            if ts != me:
                set_profile(ts, None, None)
            ts = following(ts)

    return unhook
