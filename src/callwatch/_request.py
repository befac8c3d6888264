"""Requests of handlers: the decorator's wrapper and ``callwatch.request()``.

A request owns one per-request state (see ``_core``): it is set in the ContextVar for the
duration of the request, and handed to the collector when the request ends.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, TypeVar, cast

from ._core import MARK, _BATCH, _fold, _pending, _push, _record, _reset, _set, registry
from . import _core

F = TypeVar("F", bound=Callable[..., Any])

# --------------------------------------------------------------------------------------
# Handlers


#: The sampling profiler (callwatch.profiling.Profiler) when ``profile:`` is configured.
profiler: Any = None

#: handler name -> [(dimension, function)], from the config's handlers.dimensions.
dimension_functions: dict[str, list[tuple[str, Callable[..., Any]]]] = {}


def config_dimensions(name: str, state: list[Any], *args: Any, **kwargs: Any) -> None:
    """Add the configured dimensions of handler ``name``: each function gets the handler's
    arguments (decorated handlers, routers) or the framework's request object."""
    fns = dimension_functions.get(str(state[1] or name))
    if not fns:
        return
    dims = state[0]
    if not dims:
        dims = state[0] = {}
    for key, fn in fns:
        try:
            dims[key] = str(fn(*args, **kwargs))
        except Exception:
            dims[key] = "_error"


def make_handler(fn: F, name: str) -> F:
    """Return a wrapper that makes each call of ``fn`` one request of handler ``name``."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_handler(*args: Any, **kwargs: Any) -> Any:
            st = [0] * registry.width
            tok = _set(st)
            err = 0
            p = profiler
            prof = p.begin(name) if p is not None else None
            t0 = _core._now()
            try:
                return await fn(*args, **kwargs)
            except Exception:
                err = 1
                raise
            finally:
                t = _core._now() - t0
                if prof is not None:
                    p.end(prof, name, t, st)
                _reset(tok)
                if dimension_functions:
                    config_dimensions(name, st, *args, **kwargs)
                _push((name, t, err, st))
                if len(_pending) >= _BATCH:
                    _fold()

        wrapper: Callable[..., Any] = async_handler
    else:

        @functools.wraps(fn)
        def sync_handler(*args: Any, **kwargs: Any) -> Any:
            st = [0] * registry.width
            tok = _set(st)
            err = 0
            p = profiler
            prof = p.begin(name) if p is not None else None
            t0 = _core._now()
            try:
                return fn(*args, **kwargs)
            except Exception:
                err = 1
                raise
            finally:
                t = _core._now() - t0
                if prof is not None:
                    p.end(prof, name, t, st)
                _reset(tok)
                if dimension_functions:
                    config_dimensions(name, st, *args, **kwargs)
                _push((name, t, err, st))
                if len(_pending) >= _BATCH:
                    _fold()

        wrapper = sync_handler
    setattr(wrapper, MARK, name)
    return cast(F, wrapper)


class RequestScope:
    """``with callwatch.request("name"):`` -- one request of a handler, for any block."""

    __slots__ = ("name", "_state", "_token", "_t0", "_prof", "_p")

    def __init__(self, name: str) -> None:
        self.name = name

    def __enter__(self) -> RequestScope:
        self._state = st = [0] * registry.width
        self._token = _set(st)
        self._p = p = profiler
        self._prof = p.begin(self.name) if p is not None else None
        self._t0 = _core._now()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        t = _core._now() - self._t0
        if self._prof is not None:
            self._p.end(self._prof, self.name, t, self._state)
        _reset(self._token)
        err = 1 if exc_type is not None and issubclass(exc_type, Exception) else 0
        _record(self.name, t, err, self._state)

    async def __aenter__(self) -> RequestScope:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        self.__exit__(exc_type, exc, tb)


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
