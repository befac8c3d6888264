"""Requests of handlers: the one request lifecycle.

A request of handler H begins (H may not be known yet), may be named later (when the
framework has routed it: ``callwatch.name_request``, or a name computed at the end),
gets dimensions, and finishes: its time, whether it raised or returned a 5xx, and its
per-request state are handed to the collector.  While it runs, its state is the current
one in ``_core._current``, so watched calls count for it.

Two shapes of that one lifecycle, ending the same way (the profiler's ``end`` with the
final name, ``config_dimensions``, the hand-over to the collector):

- ``make_handler``: the decorator's wrapper, which runs on every call of a user's
  function.  Everything is decided when the function is wrapped (sync or async: one
  template, compiled once for each at import), so a call costs what the hand-written
  wrapper cost before (``benchmarks/micro.py``, the ``@handler`` rows).
- ``Request``: a ``with`` block, for what cannot wrap one function
  (``callwatch.request()``); ``RoutedRequest`` adds what the framework integrations
  need: a handler name known only after routing, a 5xx status, and a body that may
  stream after the framework's call returned.

Profiling decisions that depend on the handler (``min_interval``, the on-demand trigger)
need a name at the start.  A request named only after routing gives the profiler a
``hint`` instead, a name known at the start and stable for a route (method and first path
segment); the profiler maps hints to the names it sees at the end.
"""

from __future__ import annotations

import functools
import inspect
from types import TracebackType
from typing import Any, AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Protocol, TypeVar, cast

from . import _core
from ._state import DIMS, NAME, State
from .aggregate import FOLD_BATCH, PROFILED

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

__all__ = ["NullScope", "ProfilerHooks", "Request", "RoutedRequest", "UNNAMED", "add_dimension", "config_dimensions",
           "dimension_functions", "is_wrapped", "make_handler", "name_current", "profiler"]


class ProfilerHooks(Protocol):
    """What a request needs of the sampling profiler (``callwatch.profiling.Profiler``)."""

    def begin(self, name: str | None, hint: str | None = None) -> Any:
        """At the start: a token if this request is profiled, else None.  ``name`` is None
        when the handler is named only after routing; ``hint`` then stands for it."""

    def end(self, token: Any, name: str, elapsed_ns: int, state: State) -> None:
        """At the end of a profiled request, with its final name."""

    def after_fork_in_child(self) -> None: ...


#: The sampling profiler when ``profile:`` is configured (set by configure()).
profiler: ProfilerHooks | None = None
#: The profiler's ``skip`` (``profiling._policy.PySkip``): the C handler wrapper reads it
#: from here, and decides by it only while its ``owner`` is id(profiler).
profiler_skip: Any = None

#: handler name -> [(dimension, function)], from the config's handlers.dimensions.
dimension_functions: dict[str, list[tuple[str, Callable[..., Any]]]] = {}

#: The handler name when naming the request failed (a user's naming function raised).
UNNAMED = "_unnamed"

_enter = _core._current.set
_leave = _core._current.reset
# The collector is never rebound (see _core).
_record = _core.collector.record


# --------------------------------------------------------------------------------------
# What every request does at its end (and during it, for dimensions and names)


def _end_profile(p: ProfilerHooks, prof: Any, name: str, elapsed_ns: int, state: State) -> None:
    # The profiler always gets the final name: a name given during the request wins.
    p.end(prof, str(state[NAME] or name), elapsed_ns, state)


def config_dimensions(name: str, state: State, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Add the configured dimensions of handler ``name``: each function gets the handler's
    arguments (decorated handlers, routers), the framework's request object
    (integrations), or nothing (``callwatch.request()`` blocks)."""
    fns = dimension_functions.get(str(state[NAME] or name))
    if not fns:
        return
    for key, fn in fns:
        try:
            value = str(fn(*args, **kwargs))
        except Exception:
            value = "_error"
        _set_dimension(state, key, value)


def _set_dimension(state: State, key: str, value: str) -> None:
    dims = state[DIMS]
    if not dims:
        dims = state[DIMS] = {}
    dims[key] = value


def add_dimension(key: object, value: object) -> None:
    """``callwatch.dimension``: split the current request by ``key=value`` (outside a
    request, nothing)."""
    st = _core._current.get()
    if st is not None:
        _set_dimension(st, str(key), str(value))


def name_current(name: str) -> None:
    """``callwatch.name_request``: report the current request under ``name``."""
    st = _core._current.get()
    if st is not None:
        st[NAME] = name


# --------------------------------------------------------------------------------------
# The decorator's wrapper

# One template for the sync and the async wrapper (they differ by ``async``/``await``
# only), compiled once at import; the names it uses come in as closure cells, the fastest
# lookup.  ``profiler``, ``dimension_functions`` and ``_now`` are read per call, as
# configure() and FakeClock replace them after handlers are wrapped.  The profiler begins
# before the context is entered, so that nothing is left set if it raises; it is ended by
# a direct call (a Python call in between would itself be profiled), and the request is
# flagged ``PROFILED``, so that its inflated time stays out of the handler's response
# time (``HandlerStats.settle``): both inside the profiled branch, so an unprofiled
# request pays nothing for them.  The state and the hand-over to the collector
# (``Collector.record``) are written out: this runs on every request
# (benchmarks/micro.py, the ``@handler`` rows).
_HANDLER = """\
def make(fn, name, enter, leave, push, pending, fold):
    {kw}def handler(*args, **kwargs):
        st = {{{DIMS}: 0, {NAME}: 0}}
        p = profiler
        prof = p.begin(name) if p is not None else None
        tok = enter(st)
        err = 0
        t0 = _now()
        try:
            return {aw}fn(*args, **kwargs)
        except Exception:
            err = 1
            raise
        finally:
            t = _now() - t0
            if prof is not None:
                p.end(prof, str(st[{NAME}] or name), t, st)
                err |= {PROFILED}
            leave(tok)
            if dimension_functions:
                config_dimensions(name, st, args, kwargs)
            push((name, t, err, st))
            if len(pending) >= {BATCH}:
                fold()
    return handler
"""

#: The clock, as a global of this module for the generated code (see _core.set_clock).
_now = _core._now


def _clock_changed(fn: Callable[[], int]) -> None:
    global _now
    _now = fn


_core.clock_listeners.append(_clock_changed)


def _compile_handler(kw: str, aw: str) -> Callable[..., Callable[..., Any]]:
    namespace: dict[str, Any] = {}
    src = _HANDLER.format(kw=kw, aw=aw, DIMS=DIMS, NAME=NAME, BATCH=FOLD_BATCH, PROFILED=PROFILED)
    code = compile(src, f"<callwatch {kw or 'sync '}handler>", "exec")
    exec(code, globals(), namespace)
    return cast(Callable[..., Callable[..., Any]], namespace["make"])


_make_sync = _compile_handler("", "")
_make_async = _compile_handler("async ", "await ")


def is_wrapped(fn: Callable[..., Any]) -> bool:
    """Is ``fn`` already a wrapper of callwatch's (a handler, or a watched function)?"""
    return getattr(fn, _core.MARK, None) is not None


def make_handler(fn: F, name: str) -> F:
    """Return a wrapper that makes each call of ``fn`` one request of handler ``name``.

    A sync handler gets the C extension's wrapper when it is in use (``_speedups_handler.c``,
    ``Handler``: the same lifecycle, with the generated one as its fallback), for what a
    request costs around real I/O (benchmarks/in_situ.py, the ``@handler`` rows)."""
    is_async = inspect.iscoroutinefunction(fn)
    make = _make_async if is_async else _make_sync
    pending = _core.collector.pending  # never rebound
    wrapper = make(fn, name, _enter, _leave, pending.append, pending, _core.collector.fold)
    speedups = _core._speedups
    if not is_async and _core.use_speedups and speedups is not None:
        try:
            wrapper = speedups.Handler(fn, wrapper, name, _core._current, globals(), pending, _core.collector.fold,
                                       DIMS, NAME, FOLD_BATCH, PROFILED)
        except TypeError:  # e.g. a name that is not a str: keep the generated wrapper
            pass
    functools.update_wrapper(wrapper, fn)
    setattr(wrapper, _core.MARK, name)
    return cast(F, wrapper)


# --------------------------------------------------------------------------------------
# Requests that are not one function call


def _call_name(fn: Callable[[], str] | None) -> str | None:
    # A user's naming function must not break the request.
    if fn is None:
        return None
    try:
        return str(fn())
    except Exception:
        return UNNAMED


class Request:
    """One request of handler ``name``, from entering the ``with`` block to leaving it:
    what ``callwatch.request("nightly_import")`` returns (``with`` or ``async with``).

    The handler name is a name given during the request (``callwatch.name_request``),
    else ``name``.  Leaving the block with an ``Exception`` makes the request an error.
    Configured dimension functions are called with no arguments.
    """

    __slots__ = ("name", "state", "_t0", "_token", "_p", "_prof")

    # What a RoutedRequest sets per request; for a plain block, these class defaults.
    _hint: Callable[[], str] | None = None
    _default: Callable[[], str] | None = None
    _args: tuple[Any, ...] = ()
    _body_follows = False

    def __init__(self, name: str | None) -> None:
        self.name = name
        self._prof: Any = None

    def __enter__(self) -> Request:
        self.state = st = _core.new_state()
        p = profiler
        if p is not None:
            self._p = p
            name = self.name
            self._prof = p.begin(name) if name is not None else p.begin(None, _call_name(self._hint))
        self._token: Any = _enter(st)
        self._t0 = _core._now()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # The profile covers the block (a body streamed after it is produced elsewhere),
        # and the context is left where it was entered.
        t = _core._now() - self._t0
        prof = self._prof
        if prof is not None:
            _end_profile(self._p, prof, self.final_name(), t, self.state)
        _leave(self._token)
        if exc_type is not None:
            self._end(t, issubclass(exc_type, Exception))
        elif not self._body_follows:
            self._end(t, False)

    async def __aenter__(self) -> Request:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)

    def final_name(self) -> str:
        """The handler name as it stands now."""
        return str(self.state[NAME] or self.name or _call_name(self._default) or UNNAMED)

    def _end(self, elapsed_ns: int, error: bool) -> None:
        st = self.state
        name = st[NAME] or self.name or self.final_name()  # the common case without a call
        if dimension_functions:
            config_dimensions(name, st, self._args, {})
        # A profiled request is flagged: its time is not the handler's (see _table).
        _record(name, elapsed_ns, (1 if error else 0) | (0 if self._prof is None else PROFILED), st)


class RoutedRequest(Request):
    """A request that a framework integration begins before routing it::

        req = RoutedRequest(hint=..., default=..., args=(environ,), body_follows=True)
        with req:                           # begins; watched calls count for it
            body = app(environ, start)      # the framework routes: callwatch.name_request()
        req.status = 503                    # a 5xx returned counts as an error
        for chunk in req.produce(body):     # a streamed body, produced inside the request
            ...
        req.finish()                        # the body is done (only the first end counts)

    The handler name is a name given during the request, else ``default()``, called at
    the end (when the framework has routed), else ``_unnamed``.  ``hint()`` is called at
    the start, only when a profiler runs: a name known then and stable for a route, that
    the profiler decides by until the end.  ``args`` go to the configured dimension
    functions (the framework's request object).  With ``body_follows``, leaving the
    block without an exception only ends the profile (it covers the framework's call)
    and leaves the context; ``finish()``, after the block, ends the request.
    """

    __slots__ = ("status", "_hint", "_default", "_args", "_body_follows", "_done")

    def __init__(self, *, hint: Callable[[], str] | None, default: Callable[[], str] | None,
                 args: tuple[Any, ...] = (), body_follows: bool = False) -> None:
        super().__init__(None)
        self.status = 0
        self._hint = hint
        self._default = default
        self._args = args
        self._body_follows = body_follows
        self._done = False

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` inside the request: watched calls it makes count for it."""
        tok = _enter(self.state)
        try:
            return fn(*args)
        finally:
            _leave(tok)

    def produce(self, body: Iterable[T]) -> Iterator[T]:
        """The items of ``body`` (a streamed response body), each produced inside the
        request, so that the watched calls a body makes count for it."""
        it = self.call(iter, body)
        while True:
            try:
                chunk = self.call(next, it)
            except StopIteration:
                return
            yield chunk

    async def aproduce(self, body: AsyncIterable[T]) -> AsyncIterator[T]:
        """``produce`` for an async body."""
        it = self.call(aiter, body)
        while True:
            tok = _enter(self.state)
            try:
                chunk = await anext(it)
            except StopAsyncIteration:
                return
            finally:
                _leave(tok)
            yield chunk

    def finish(self, error: bool = False) -> None:
        """End the request after its block (a body that followed it is done)."""
        self._end(_core._now() - self._t0, error)

    def _end(self, elapsed_ns: int, error: bool) -> None:
        # A body's last chunk and the server's close() may both end it: the first counts.
        if self._done:
            return
        self._done = True
        super()._end(elapsed_ns, error or self.status >= 500)


class NullScope:
    """What ``request()`` returns while callwatch is disabled."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> NullScope:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> NullScope:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None
