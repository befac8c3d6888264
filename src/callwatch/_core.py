"""The hot path: which request is running, and what its watched calls cost.

Everything that can be decided is decided when a function is wrapped: sync or async,
grouped or not, and the exact parameter list.  For a plain Python function the watched
wrapper is generated with the same signature as the function (``def get_user(self, uid)``
rather than ``def wrapper(*args, **kwargs)``), which saves packing a tuple and a dict on
every call.  Per call the wrapper then does one ``ContextVar.get()``, two clock reads and
a few list-slot updates; everything else happens once per request in ``aggregate``.

Re-entry rule (recursion, or a watched function that calls itself through others): every
call is counted, but only the outermost call's time is added, so time is never counted
twice.  A group's time is likewise the time during which at least one of its members ran.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import keyword
import os
import time
import types
from typing import Any, Awaitable, Callable, TypeVar, cast

from . import aggregate
from .aggregate import BACKGROUND, Collector, Registry

F = TypeVar("F", bound=Callable[..., Any])

registry = Registry()
collector = Collector(registry)

_current: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "callwatch_request", default=None
)
_get = _current.get
_set = _current.set
_reset = _current.reset
_record = collector.record
# What _record does, inlined in the handler wrappers: an append, and a batch fold now and
# then (see Collector.record).  ``pending`` is never rebound, so these stay valid.
_pending = collector.pending
_push = _pending.append
_fold = collector.fold
_BATCH = aggregate.FOLD_BATCH
_grow = registry.grow
#: The clock for durations.  Wrappers look it up as a module global on each call so
#: that ``callwatch.testing.FakeClock`` can replace it.
_now = time.perf_counter_ns

#: Set on every wrapper callwatch makes: the watched entry (or handler name).
MARK = "__callwatch__"

# The watched-call wrapper in C (src/callwatch/_speedups.c), when it was built: same
# numbers, far less CPU per call around real I/O.  CALLWATCH_PURE_PYTHON=1 turns it off;
# ``use_speedups`` is read when a function is wrapped.
_speedups: Any
try:
    if os.environ.get("CALLWATCH_PURE_PYTHON", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ImportError("CALLWATCH_PURE_PYTHON is set")
    from . import _speedups
except ImportError:
    _speedups = None
use_speedups = _speedups is not None


def set_clock(fn: Callable[[], int]) -> None:
    """Read durations from ``fn`` (int nanoseconds): ``callwatch.testing.FakeClock``."""
    global _now
    _now = fn
    if _speedups is not None:
        _speedups.set_clock(None if fn is time.perf_counter_ns else fn)


def disabled_by_env() -> bool:
    """``CALLWATCH_DISABLED`` turns decorators into no-ops (read when they are applied)."""
    return os.environ.get("CALLWATCH_DISABLED", "").strip().lower() in ("1", "true", "yes", "on")


def new_state() -> list[int]:
    return [0] * registry.width


def current_state() -> list[int] | None:
    return _get()


def _background_done(state: list[int]) -> None:
    _record(BACKGROUND, -1, 0, state)


# --------------------------------------------------------------------------------------
# Watched functions


def make_watched(fn: F, name: str, group: str | None = None) -> F:
    """Return a wrapper that counts and times calls of ``fn`` for the current request."""
    entry = registry.function(name, group)
    if inspect.iscoroutinefunction(fn):
        wrapper: Callable[..., Any] = _async_watched(fn, entry)
    else:
        wrapper = _generated_watched(fn, entry) or _generic_watched(fn, entry)
        if use_speedups and _speedups is not None:
            functools.update_wrapper(wrapper, fn)
            c = 3 * entry.index
            gi = entry.group_index
            try:
                wrapper = _speedups.Watched(fn, _current, wrapper, c, c + 1, c + 2,
                                            3 * gi + 1 if gi >= 0 else -1, 3 * gi + 2 if gi >= 0 else -1)
            except TypeError:  # e.g. a ContextVar replaced by a library: keep the Python wrapper
                pass
    functools.update_wrapper(wrapper, fn)
    setattr(wrapper, MARK, entry)
    return cast(F, wrapper)


def _generic_watched(fn: Callable[..., Any], entry: aggregate.Entry) -> Callable[..., Any]:
    c = 3 * entry.index
    s = c + 1
    d = c + 2
    gi = entry.group_index
    gs = 3 * gi + 1
    gd = 3 * gi + 2

    def watched(*args: Any, **kwargs: Any) -> Any:
        st = _get()
        if st is None:
            st = [0] * registry.width
            tok = _set(st)
            try:
                return watched(*args, **kwargs)
            finally:
                _reset(tok)
                _background_done(st)
        try:
            active = st[d]
        except IndexError:
            active = _grow(st)
        st[c] += 1
        if active:
            return fn(*args, **kwargs)
        st[d] = 1
        g = 0
        if gi >= 0:
            g = st[gd]
            st[gd] = g + 1
        t0 = _now()
        try:
            return fn(*args, **kwargs)
        finally:
            t = _now() - t0
            st[s] += t
            if gi >= 0:
                if not g:
                    st[gs] += t
                st[gd] = g
            st[d] = 0

    return watched


def _async_watched(fn: Callable[..., Awaitable[Any]], entry: aggregate.Entry) -> Callable[..., Any]:
    # Concurrent awaits of one function inside one request (asyncio.gather) overlap, so
    # the active slot is a depth counter and the time added is the union of the
    # intervals: the slot goes negative by t0 when the first call starts and gets t1
    # back when the last one ends.
    c = 3 * entry.index
    s = c + 1
    d = c + 2
    gi = entry.group_index
    gs = 3 * gi + 1
    gd = 3 * gi + 2

    async def watched(*args: Any, **kwargs: Any) -> Any:
        st = _get()
        if st is None:
            st = [0] * registry.width
            tok = _set(st)
            try:
                return await watched(*args, **kwargs)
            finally:
                _reset(tok)
                _background_done(st)
        try:
            active = st[d]
        except IndexError:
            active = _grow(st)
        st[c] += 1
        st[d] = active + 1
        t0 = _now()
        if not active:
            st[s] -= t0
        if gi >= 0:
            g = st[gd]
            st[gd] = g + 1
            if not g:
                st[gs] -= t0
        try:
            return await fn(*args, **kwargs)
        finally:
            t1 = _now()
            active = st[d] - 1
            st[d] = active
            if not active:
                st[s] += t1
            if gi >= 0:
                g = st[gd] - 1
                st[gd] = g
                if not g:
                    st[gs] += t1

    return watched


_TEMPLATE = """\
def _cw_make(_cw_fn, _cw_c, _cw_s, _cw_d, _cw_gs, _cw_gd{defaults}):
    def _cw_watched({params}):
        _cw_st = _get()
        if _cw_st is None:
            _cw_st = [0] * registry.width
            _cw_tok = _set(_cw_st)
            try:
                return _cw_watched({call})
            finally:
                _reset(_cw_tok)
                _background_done(_cw_st)
        try:
            _cw_a = _cw_st[_cw_d]
        except IndexError:
            _cw_a = _grow(_cw_st)
        _cw_st[_cw_c] += 1
        if _cw_a:
            return _cw_fn({call})
        _cw_st[_cw_d] = 1
{enter}        _cw_t0 = _now()
        try:
            return _cw_fn({call})
        finally:
{leave}            _cw_st[_cw_d] = 0
    return _cw_watched
"""
_ENTER_PLAIN = ""
_LEAVE_PLAIN = "            _cw_st[_cw_s] += _now() - _cw_t0\n"
_ENTER_GROUP = "        _cw_g = _cw_st[_cw_gd]\n        _cw_st[_cw_gd] = _cw_g + 1\n"
_LEAVE_GROUP = (
    "            _cw_t = _now() - _cw_t0\n"
    "            _cw_st[_cw_s] += _cw_t\n"
    "            if not _cw_g:\n"
    "                _cw_st[_cw_gs] += _cw_t\n"
    "            _cw_st[_cw_gd] = _cw_g\n"
)


def _signature_code(fn: Callable[..., Any]) -> tuple[str, str, dict[str, Any]] | None:
    """(parameter list, call arguments, defaults) to copy ``fn``'s signature, or None.

    Only for plain Python functions whose signature comes from their code object; any
    doubt (a ``__signature__`` override, odd names) falls back to ``*args, **kwargs``.
    """
    if type(fn) is not types.FunctionType or "__signature__" in vars(fn):
        return None
    try:
        sig = inspect.signature(fn, follow_wrapped=False)
    except (TypeError, ValueError):
        return None
    P = inspect.Parameter
    params: list[str] = []
    call: list[str] = []
    defaults: dict[str, Any] = {}
    star_done = False
    items = list(sig.parameters.values())
    for i, p in enumerate(items):
        n = p.name
        if not n.isidentifier() or keyword.iskeyword(n) or n.startswith("_cw_"):
            return None
        decl = n
        if p.default is not P.empty:
            defaults[f"_cw_d{i}"] = p.default
            decl = f"{n}=_cw_d{i}"
        if p.kind is P.POSITIONAL_ONLY:
            params.append(decl)
            call.append(n)
            if i + 1 == len(items) or items[i + 1].kind is not P.POSITIONAL_ONLY:
                params.append("/")
        elif p.kind is P.POSITIONAL_OR_KEYWORD:
            params.append(decl)
            call.append(n)
        elif p.kind is P.VAR_POSITIONAL:
            params.append("*" + n)
            call.append("*" + n)
            star_done = True
        elif p.kind is P.KEYWORD_ONLY:
            if not star_done:
                params.append("*")
                star_done = True
            params.append(decl)
            call.append(f"{n}={n}")
        else:  # VAR_KEYWORD
            params.append("**" + n)
            call.append("**" + n)
    return ", ".join(params), ", ".join(call), defaults


def _generated_watched(fn: Callable[..., Any], entry: aggregate.Entry) -> Callable[..., Any] | None:
    sig = _signature_code(fn)
    if sig is None:
        return None
    params, call, defaults = sig
    grouped = entry.group_index >= 0
    src = _TEMPLATE.format(
        defaults="".join(", " + k for k in defaults),
        params=params,
        call=call,
        enter=_ENTER_GROUP if grouped else _ENTER_PLAIN,
        leave=_LEAVE_GROUP if grouped else _LEAVE_PLAIN,
    )
    namespace: dict[str, Any] = {}
    # Executed with this module's globals, so the wrapper sees ``_now`` swaps.
    exec(compile(src, f"<callwatch wrapper of {fn.__qualname__}>", "exec"), globals(), namespace)
    c = 3 * entry.index
    gi = entry.group_index
    made = namespace["_cw_make"](fn, c, c + 1, c + 2, 3 * gi + 1, 3 * gi + 2, *defaults.values())
    return cast(Callable[..., Any], made)


def add_call(entry: aggregate.Entry, ns: int) -> None:
    """Count one call of ``entry`` that took ``ns``, measured by someone else (e.g. a
    library's before/after events rather than a wrapper)."""
    st = _get()
    if st is None:
        st = [0] * registry.width
        _add_slots(st, entry, ns)
        _background_done(st)
        return
    if len(st) < registry.width:
        _grow(st)
    _add_slots(st, entry, ns)


def _add_slots(st: list[Any], e: aggregate.Entry, ns: int) -> None:
    c = 3 * e.index
    st[c] += 1
    if not st[c + 2]:  # not inside a wrapped call of the same entry
        st[c + 1] += ns
    if e.group_index >= 0 and not st[3 * e.group_index + 2]:
        st[3 * e.group_index + 1] += ns


def make_keyed_watched(fn: F, key_of: Callable[..., str], name_of: Callable[[str], str],
                       group: str | None, max_keys: int = 64) -> F:
    """Like ``make_watched``, with one metric per key of the call (e.g. per redis command:
    ``redis_GET``, ``redis_SET``).  At most ``max_keys`` keys; the rest share ``other``."""
    entries: dict[str, aggregate.Entry] = {}

    def entry_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> aggregate.Entry:
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
