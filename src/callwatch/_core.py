"""The hot path: which request is running, and what its watched calls cost.

Everything that can be decided is decided when a function is wrapped: sync or async,
grouped or not, and the exact parameter list.  For a plain Python function the watched
wrapper is generated with the same signature as the function (``def get_user(self, uid)``
rather than ``def wrapper(*args, **kwargs)``), which saves packing a tuple and a dict on
every call.  Per call the wrapper then does one ``ContextVar.get()``, two clock reads, one
lookup of the function's record in the request's state and a few updates of it (layout:
``_state``); everything else happens once per request in ``aggregate``.  A call outside
any request is a background request of its own (``aggregate.BACKGROUND``).

Re-entry rule (recursion, or a watched function that calls itself through others): every
call is counted, but only the outermost call's time is added, so time is never counted
twice.  A group's time is likewise the time during which at least one of its members ran.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import textwrap
import time
import types
from typing import Any, Awaitable, Callable, TypeVar, cast

from . import _env, _state
from ._signature import signature_code
from ._state import ACTIVE, CALLS, NS, State, record
from .aggregate import BACKGROUND as _BACKGROUND, FOLD_BATCH, Collector, Entry, Registry

F = TypeVar("F", bound=Callable[..., Any])

registry = Registry()
collector = Collector(registry)

_current: contextvars.ContextVar[State | None] = contextvars.ContextVar("callwatch_request", default=None)
_get = _current.get
_set = _current.set
_reset = _current.reset
# A watched call outside any request is a "background" request of its own (the collector
# is never rebound, so its methods are bound once here).
_bg_start = collector.background_started
_bg_done = collector.background_done
# What _bg_start and _bg_done do, written out in the generated wrappers (every call outside
# a request goes through them: benchmarks/micro.py).
_bg_live = collector.live_background
_bg_pending = collector.pending
_bg_push = _bg_pending.append
_bg_fold = collector.fold
#: The clock for durations.  Wrappers look it up as a module global on each call so
#: that ``callwatch.testing.FakeClock`` can replace it.
_now = time.perf_counter_ns
#: A fresh request state, and a fresh record in it (see ``_state``).
new_state = _state.new_state
_new_record = _state.new_record

#: Set on every wrapper callwatch makes: the watched entry (or handler name).
MARK = "__callwatch__"

# The watched-call wrapper in C (src/callwatch/_speedups_watched.c), when it was built: same
# numbers, far less CPU per call around real I/O.  CALLWATCH_PURE_PYTHON=1 turns it off
# (``_state`` imports it); ``use_speedups`` is read when a function is wrapped.
_speedups: Any = _state.speedups
use_speedups = _speedups is not None


#: Told of every new clock: modules whose generated code reads the clock as a global of
#: their own (one lookup cheaper per read than ``_core._now``).
clock_listeners: list[Callable[[Callable[[], int]], None]] = []


def set_clock(fn: Callable[[], int]) -> None:
    """Read durations from ``fn`` (int nanoseconds): ``callwatch.testing.FakeClock``."""
    global _now
    _now = fn
    for listener in clock_listeners:
        listener(fn)
    if _speedups is not None:
        _speedups.set_clock(None if fn is time.perf_counter_ns else fn)


def disabled_by_env() -> bool:
    """``CALLWATCH_DISABLED`` turns decorators into no-ops (read when they are applied)."""
    return _env.flag("CALLWATCH_DISABLED")


# --------------------------------------------------------------------------------------
# Watched functions


def make_watched(fn: F, name: str, group: str | None = None) -> F:
    """Return a wrapper that counts and times calls of ``fn`` for the current request."""
    entry = registry.function(name, group)
    if inspect.iscoroutinefunction(fn):
        wrapper: Callable[..., Any] = _async_watched(fn, entry)
        if use_speedups and _speedups is not None:
            wrapper = _c_async_watched(fn, entry, wrapper)
    else:
        wrapper = _generated_watched(fn, entry)
        if use_speedups and _speedups is not None:
            _copy_attributes(wrapper, fn)
            try:
                wrapper = _speedups.Watched(fn, _current, wrapper, entry.index, entry.group_index,
                                            CALLS, NS, ACTIVE)
            except TypeError:  # e.g. a ContextVar replaced by a library: keep the Python wrapper
                pass
        elif inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            wrapper = _generator_function(wrapper, fn)
    _copy_attributes(wrapper, fn)
    setattr(wrapper, MARK, entry)
    return cast(F, wrapper)


def _copy_attributes(wrapper: Callable[..., Any], fn: Callable[..., Any]) -> None:
    """``functools.update_wrapper``, plus the public attributes that it misses because
    they live on ``fn``'s type (``lru_cache``'s ``cache_info``, ``cache_clear``...)."""
    functools.update_wrapper(wrapper, fn)
    if type(fn) is types.FunctionType or not isinstance(wrapper, types.FunctionType):
        return  # a plain function's are all in __dict__; the C wrapper reads fn's itself
    for attr in dir(fn):
        if not attr.startswith("_") and not hasattr(wrapper, attr):
            try:
                setattr(wrapper, attr, getattr(fn, attr))
            except (AttributeError, TypeError):
                pass


def _generator_function(counted: Callable[..., Any], fn: Callable[..., Any]) -> Callable[..., Any]:
    """A generator (or async generator) function around ``counted``, so that ``inspect``
    and frameworks that look (FastAPI's dependencies) see what ``fn`` is.  The call is
    counted when the generator starts, in the request that starts it."""
    if inspect.isgeneratorfunction(fn):
        def generator(*args: Any, **kwargs: Any) -> Any:
            return (yield from counted(*args, **kwargs))

        return generator

    async def async_generator(*args: Any, **kwargs: Any) -> Any:
        inner = counted(*args, **kwargs)
        try:
            value = await inner.__anext__()
            while True:
                try:
                    sent = yield value
                except GeneratorExit:
                    await inner.aclose()
                    raise
                except BaseException as e:  # thrown in: pass it on
                    value = await inner.athrow(e)
                else:
                    value = await inner.asend(sent)
        except StopAsyncIteration:
            return

    return async_generator


def _async_watched(fn: Callable[..., Awaitable[Any]], entry: Entry) -> Callable[..., Any]:
    # Concurrent awaits of one function inside one request (asyncio.gather) overlap, so
    # ACTIVE is a depth counter and the time added is the union of the intervals: NS
    # goes negative by t0 when the first call starts and gets t1 back when the last ends.
    k = entry.index
    gk = entry.group_index

    async def watched(*args: Any, **kwargs: Any) -> Any:
        st = _get()
        tok = None
        if st is None:
            st = new_state()
            tok = _set(st)
            _bg_start(st)
        e = record(st, k)
        e[CALLS] += 1
        active = e[ACTIVE]
        e[ACTIVE] = active + 1
        t0 = _now()
        if not active:
            e[NS] -= t0
        if gk >= 0:
            g = record(st, gk)
            g[CALLS] += 1
            n = g[ACTIVE]
            g[ACTIVE] = n + 1
            if not n:
                g[NS] -= t0
        try:
            return await fn(*args, **kwargs)
        finally:
            t1 = _now()
            active = e[ACTIVE] - 1
            e[ACTIVE] = active
            if not active:
                e[NS] += t1
            if gk >= 0:
                n = g[ACTIVE] - 1
                g[ACTIVE] = n
                if not n:
                    g[NS] += t1
            if tok is not None:
                _reset(tok)
                _bg_done(st)

    return watched


def _c_async_watched(fn: Callable[..., Awaitable[Any]], entry: Entry, slow: Callable[..., Any]) -> Callable[..., Any]:
    """``_async_watched`` with its bookkeeping done by the C extension: two C calls per
    call rather than a score of record updates (each a generic subscript on a ``Record``);
    ``slow``, the Python one, takes the calls outside any request and states that are not
    of records."""
    try:
        c = _speedups.Watched(fn, _current, slow, entry.index, entry.group_index, CALLS, NS, ACTIVE)
    except TypeError:  # e.g. a ContextVar replaced by a library
        return slow
    enter, leave = c._cw_enter, c._cw_leave

    async def watched(*args: Any, **kwargs: Any) -> Any:
        st = _get()
        if st is None or not enter(st):
            return await slow(*args, **kwargs)
        try:
            return await fn(*args, **kwargs)
        finally:
            leave(st)

    return watched


# Outside any request the wrapper makes a background state and runs the same body in the
# same frame (not a second call of itself: a watched call costs one frame of recursion
# depth), so the body is written once and placed twice.
_TEMPLATE = """\
def _cw_make(_cw_fn, _cw_k, _cw_gk{defaults}):
    def _cw_watched({params}):
        _cw_st = _get()
        if _cw_st is None:
            _cw_st = {{{DIMS}: 0, {NAME}: 0}}
            _cw_tok = _set(_cw_st)
            _bg_live[id(_cw_st)] = _cw_st
            try:
{background}
            finally:
                _reset(_cw_tok)
                _bg_live.pop(id(_cw_st), None)
                _bg_push((_BACKGROUND, -1, 0, _cw_st))
                if len(_bg_pending) >= {BATCH}:
                    _bg_fold()
{body}
    return _cw_watched
"""
# A record is made on first touch with ``setdefault`` (a signal handler or finalizer may
# make it first in between; its counts stay); ``get`` rather than catching KeyError, which
# costs far more on every first touch (every call outside a request is one).
_BODY = """\
_cw_e = _cw_st.get(_cw_k)
if _cw_e is None:
    _cw_e = _cw_st.setdefault(_cw_k, {RECORD})
_cw_e[{CALLS}] += 1
{count}if _cw_e[{ACTIVE}]:
    return _cw_fn({call})
_cw_e[{ACTIVE}] = 1
{enter}_cw_t0 = _now()
try:
    return _cw_fn({call})
finally:
{leave}    _cw_e[{ACTIVE}] = 0
"""
_ENTER_PLAIN = ""
_LEAVE_PLAIN = "    _cw_e[{NS}] += _now() - _cw_t0\n"
# A group's calls are its members' calls, every one of them; its time is the time during
# which at least one member ran.
_COUNT_GROUP = (
    "_cw_g = _cw_st.get(_cw_gk)\n"
    "if _cw_g is None:\n"
    "    _cw_g = _cw_st.setdefault(_cw_gk, {RECORD})\n"
    "_cw_g[{CALLS}] += 1\n"
)
_ENTER_GROUP = (
    "_cw_gn = _cw_g[{ACTIVE}]\n"
    "_cw_g[{ACTIVE}] = _cw_gn + 1\n"
)
_LEAVE_GROUP = (
    "    _cw_t = _now() - _cw_t0\n"
    "    _cw_e[{NS}] += _cw_t\n"
    "    if not _cw_gn:\n"
    "        _cw_g[{NS}] += _cw_t\n"
    "    _cw_g[{ACTIVE}] = _cw_gn\n"
)
_LAYOUT = {"CALLS": CALLS, "NS": NS, "ACTIVE": ACTIVE, "RECORD": "_new_record()"}


def _generated_watched(fn: Callable[..., Any], entry: Entry) -> Callable[..., Any]:
    """The wrapper with ``fn``'s own parameter list, or ``*args, **kwargs`` (generic)."""
    sig = signature_code(fn) or ("*args, **kwargs", "*args, **kwargs", {})
    params, call, defaults = sig
    grouped = entry.group_index >= 0
    body = _BODY.format(
        call=call,
        count=_COUNT_GROUP.format(**_LAYOUT) if grouped else "",
        enter=(_ENTER_GROUP if grouped else _ENTER_PLAIN).format(**_LAYOUT),
        leave=(_LEAVE_GROUP if grouped else _LEAVE_PLAIN).format(**_LAYOUT),
        **_LAYOUT,
    )
    src = _TEMPLATE.format(
        BATCH=FOLD_BATCH, DIMS=_state.DIMS, NAME=_state.NAME,
        defaults="".join(", " + k for k in defaults),
        params=params,
        background=textwrap.indent(body, " " * 16).rstrip("\n"),
        body=textwrap.indent(body, " " * 8).rstrip("\n"),
    )
    namespace: dict[str, Any] = {}
    # Executed with this module's globals, so the wrapper sees ``_now`` swaps.
    exec(compile(src, f"<callwatch wrapper of {getattr(fn, '__qualname__', fn)!r}>", "exec"), globals(), namespace)
    made = namespace["_cw_make"](fn, entry.index, entry.group_index, *defaults.values())
    return cast(Callable[..., Any], made)


def add_call(entry: Entry, ns: int) -> None:
    """Count one call of ``entry`` that took ``ns``, measured by someone else (e.g. a
    library's before/after events rather than a wrapper)."""
    st = _get()
    background = st is None
    if st is None:
        st = new_state()
    e = record(st, entry.index)
    e[CALLS] += 1
    if not e[ACTIVE]:  # not inside a wrapped call of the same entry
        e[NS] += ns
    if entry.group_index >= 0:
        g = record(st, entry.group_index)
        g[CALLS] += 1
        if not g[ACTIVE]:
            g[NS] += ns
    if background:
        collector.record(_BACKGROUND, -1, 0, st)


def make_keyed_watched(fn: F, key_of: Callable[..., str], name_of: Callable[[str], str],
                       group: str | None, max_keys: int = 64) -> F:
    """Like ``make_watched``, with one metric per key of the call (e.g. per redis command:
    ``redis_GET``, ``redis_SET``).  At most ``max_keys`` keys; the rest share ``other``."""
    entries: dict[str, Entry] = {}

    def entry_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Entry:
        try:
            key = str(key_of(*args, **kwargs))
        except Exception:
            key = "unknown"
        e = entries.get(key)
        if e is None:
            if len(entries) >= max_keys:
                key = "other"
                e = entries.get(key)
            if e is None:
                e = entries[key] = registry.function(name_of(key), group)
        return e

    if inspect.iscoroutinefunction(fn):
        async def akeyed(*args: Any, **kwargs: Any) -> Any:
            e = entry_for(args, kwargs)
            t0 = _now()
            try:
                return await fn(*args, **kwargs)
            finally:
                add_call(e, _now() - t0)

        wrapper: Callable[..., Any] = akeyed
    else:
        def keyed(*args: Any, **kwargs: Any) -> Any:
            e = entry_for(args, kwargs)
            t0 = _now()
            try:
                return fn(*args, **kwargs)
            finally:
                add_call(e, _now() - t0)

        wrapper = keyed
    functools.update_wrapper(wrapper, fn)
    setattr(wrapper, MARK, "keyed")
    return cast(F, wrapper)
