"""callwatch: per-handler response time and watched-call metrics, pushed to Graphite.

Usage::

    import callwatch

    @callwatch.handler("login")
    def login(request): ...

    @callwatch.watch(group="db")
    def get_user(uid): ...

    callwatch.configure("callwatch.yaml")   # patches the YAML's watch targets, starts flushing
    ...
    callwatch.shutdown()                    # final flush, undo patches
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, TypeVar, overload

from . import _core, _request
from ._runtime import Runtime, configure, flush, shutdown
from .aggregate import BACKGROUND, OVERFLOW
from .errors import ConfigError

__all__ = [
    "BACKGROUND",
    "OVERFLOW",
    "ConfigError",
    "Runtime",
    "__version__",
    "configure",
    "dimension",
    "flush",
    "handler",
    "name_request",
    "request",
    "shutdown",
    "watch",
]

# The version is pyproject.toml's, read from the installed metadata on first use: importing
# importlib.metadata costs ~17 ms, which every server importing callwatch would pay at start.
# mypy sees only the annotation: a module __getattr__ would type any misspelt name as str.
if TYPE_CHECKING:
    __version__: str
else:
    def __getattr__(name: str) -> str:
        if name != "__version__":
            raise AttributeError(f"module 'callwatch' has no attribute {name!r}")
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("callwatch")
        except PackageNotFoundError:  # imported from a source tree that was never installed
            found = "0+unknown"
        globals()["__version__"] = found
        return found

F = TypeVar("F", bound=Callable[..., Any])


@overload
def handler(name: F) -> F: ...
@overload
def handler(name: str | None = None) -> Callable[[F], F]: ...


def handler(name: Any = None) -> Any:
    """Make each call of the decorated function (sync or async) one request of a handler.

    ``@callwatch.handler("login")``, or bare ``@callwatch.handler`` to use the function's
    name.  Watched calls made during the call are attributed to this handler.
    """
    if callable(name):
        return _handler(name, name.__name__)

    def deco(fn: F) -> F:
        return _handler(fn, name or fn.__name__)

    return deco


def _handler(fn: F, name: str) -> F:
    if _core.disabled_by_env():
        return fn
    return _request.make_handler(fn, name)


@overload
def watch(fn: F) -> F: ...
@overload
def watch(fn: None = None, *, name: str | None = None, group: str | None = None) -> Callable[[F], F]: ...


def watch(fn: Any = None, *, name: str | None = None, group: str | None = None) -> Any:
    """Count and time calls of a function you own, per request of the current handler.

    ``@callwatch.watch`` or ``@callwatch.watch(name="get_user", group="db")``.  The metric
    name defaults to the function's qualified name with dots as ``_``.
    """
    def deco(f: F) -> F:
        if _core.disabled_by_env():
            return f
        from ._targets import metric_name

        return _core.make_watched(f, metric_name(name or f.__qualname__), metric_name(group) if group else None)

    return deco(fn) if callable(fn) else deco


def request(name: str) -> _request.Request | _request.NullScope:
    """A block of code that is one request of handler ``name`` (``with`` or ``async with``)::

        with callwatch.request("nightly_import"):
            ...

    Configured dimension functions of ``name`` are called with no arguments.
    """
    if _core.disabled_by_env():
        return _request.NullScope(name)
    return _request.Request(name)


def dimension(key: str, value: object) -> None:
    """Also report the current request under ``key=value`` (e.g. players=7).

    The handler's totals stay as they are; the request is added as well to
    ``handler.<h>.by.<key>.<value>...``, so a chart can show calls per request against
    the number of players.  Values per handler and key are capped
    (``handlers.max_dimension_values``); the rest count under ``_other``.
    Outside a request this does nothing.
    """
    _request.add_dimension(key, value)


def name_request(name: str) -> None:
    """Report the current request under ``name`` (for frameworks that route after the
    request started: a middleware opens the request, the router names it)."""
    _request.name_current(name)
