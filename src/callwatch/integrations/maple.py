"""maple and haven: every route of an app and of its blueprints, present and future.

    import callwatch
    from callwatch.integrations.maple import instrument

    app = Workshop()                       # maple; or haven's GHaven(Box), same call
    instrument(app, config="callwatch.yaml")  # configured in each worker as it starts
    app.register_blueprint(game)           # routes added later are instrumented too
    app.run("127.0.0.1", 28000, workers=3)

Each call of a route's view function is one request of the handler named after maple's
endpoint: ``join_table`` for an app route, ``game.join_table`` for a blueprint's;
``by="cmd"`` names it ``cmd_<command>`` instead.  Two commands never share a series: an
app whose endpoint repeats (two app routes of functions with one name), or whose endpoints
are one metric name once sanitized (``lobby.join`` and ``lobby_join``), gets a warning,
and the later command is reported as ``<endpoint>_<command>``.  A view that raises counts as an error (maple then answers
``RET_INTERNAL``, as without callwatch).

Why the app's ``add_route_rule``: maple and haven route through one mixin whose ``route``
decorator and blueprint merge (``_merge_routes``, at ``run()``) both end there, and a
request finds its view in ``rule_map`` by command.  So the view functions already in
``rule_map`` are wrapped once, and ``add_route_rule`` is replaced on the instance so that
every later rule is wrapped as it is added: the name is decided then, never per request.

Processes (maple's ``Workshop`` forks its workers with ``multiprocessing``):

- ``config=...``: callwatch is configured in each worker when it starts (maple's
  ``start_worker`` event) and shut down when it stops (``stop_worker``), so every worker
  takes its own slot, the master takes none (it serves nothing), and a worker's last
  partial interval is sent and left in its slot for its replacement.
- no ``config``: configure callwatch yourself, once in the master before ``run()``; each
  forked worker takes its own slot (see README "Several processes") and sends its last
  partial interval when multiprocessing ends it.  The master keeps the slot it took at
  ``configure()``: callwatch is live there, and what the master itself calls that is
  watched is sent under that name, never under a worker's.

haven's ``GHaven`` is one process: the same events fire around its serve loop.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Literal, Mapping, Protocol

import callwatch
from callwatch.config import Config
from callwatch.naming import sanitize

# A view the user already made a handler keeps its own name, and is not counted twice.
from .._request import is_wrapped

__all__ = ["instrument"]

log = logging.getLogger("callwatch")

Source = str | os.PathLike[str] | Mapping[str, Any] | Config

#: Set on an instrumented app, so that a second instrument() leaves it alone.
_INSTRUMENTED = "_callwatch_instrumented"


class App(Protocol):
    """What maple's ``Workshop`` and haven's ``Haven`` share (their ``RoutesMixin`` and
    ``AppEventsMixin``)."""

    rule_map: dict[Any, dict[str, Any]]

    def add_route_rule(self, cmd: Any, view_func: Callable[..., Any], endpoint: str | None = None,
                       **kwargs: Any) -> None: ...

    def start_worker(self, f: Callable[..., Any]) -> Any: ...

    def stop_worker(self, f: Callable[..., Any]) -> Any: ...


def _by_endpoint(cmd: Any, rule: dict[str, Any]) -> str:
    return str(rule["endpoint"])


def _by_cmd(cmd: Any, rule: dict[str, Any]) -> str:
    return f"cmd_{cmd}"


_NAMERS: dict[str, Callable[[Any, dict[str, Any]], str]] = {"endpoint": _by_endpoint, "cmd": _by_cmd}


def instrument(app: App, config: Source | None = None, *,
               by: Literal["endpoint", "cmd"] = "endpoint") -> App:
    """Make every route of ``app`` (maple ``Workshop`` or haven ``GHaven``/``THaven``) and
    of its blueprints a callwatch handler, including routes added after this call.

    ``config`` (a YAML path, a dict or a ``callwatch.Config``): configure callwatch in each
    worker as it starts.  ``by``: handler names from maple's endpoints (``game.join_table``)
    or from command numbers (``cmd_101``).  Calling it again on the same app does nothing.
    Returns ``app``.
    """
    if by not in _NAMERS:
        raise ValueError(f"instrument(by={by!r}): by must be 'endpoint' or 'cmd'")
    if getattr(app, _INSTRUMENTED, None) is not None:
        return app
    name_of = _NAMERS[by]
    rules = app.rule_map
    add = app.add_route_rule
    commands: dict[str, tuple[Any, str]] = {}  # metric name -> (command, handler name) given it first

    def wrap(cmd: Any) -> None:
        rule = rules[cmd]
        fn = rule["view_func"]
        if not is_wrapped(fn):
            rule["view_func"] = callwatch.handler(_unique(name_of(cmd, rule), cmd, commands))(fn)

    def add_route_rule(cmd: Any, view_func: Callable[..., Any], endpoint: str | None = None,
                       **kwargs: Any) -> None:
        old = rules.get(cmd)
        if old is not None and getattr(old["view_func"], "__wrapped__", None) is view_func:
            view_func = old["view_func"]  # the same function again: maple accepts it, keep its wrapper
        add(cmd, view_func, endpoint, **kwargs)
        wrap(cmd)

    for cmd in list(rules):
        wrap(cmd)
    setattr(app, "add_route_rule", add_route_rule)
    setattr(app, _INSTRUMENTED, by)
    if config is not None:
        _configure_per_worker(app, config)
    return app


def _unique(name: str, cmd: Any, commands: dict[str, tuple[Any, str]]) -> str:
    # Keyed by the metric name, not the handler name: the exporter merges handlers whose
    # names sanitize alike into one series.
    first, first_name = commands.setdefault(sanitize(name), (cmd, name))
    if first == cmd:
        return name
    unique = f"{name}_{cmd}"
    if first_name == name:
        log.warning("callwatch: the maple endpoint %r is used by commands %r and %r; command %r is reported as "
                    "%r. Fix: give one of them its own endpoint (route(%r, endpoint=...))",
                    name, first, cmd, cmd, unique, cmd)
    else:
        log.warning("callwatch: the maple endpoints %r (command %r) and %r (command %r) are one metric name, %r; "
                    "command %r is reported as %r. Fix: give one of them another endpoint (route(%r, endpoint=...))",
                    first_name, first, name, cmd, sanitize(name), cmd, unique, cmd)
    return _unique(unique, cmd, commands)


def _configure_per_worker(app: App, config: Source) -> None:
    # What the integration starts it also stops: at stop_worker, while the worker still
    # runs, rather than at the process's end (maple's workers end with os._exit).
    # maple calls these with the worker, haven with nothing.
    def start(*_: Any) -> None:
        callwatch.configure(config)

    def stop(*_: Any) -> None:
        callwatch.shutdown()

    app.start_worker(start)
    app.stop_worker(stop)
