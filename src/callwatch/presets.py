"""Presets: the usual watched functions, by name (``watch: [{preset: redis}]``).

=========== ======== ==========================================================================
preset      group    what is counted (metric names)
=========== ======== ==========================================================================
redis       redis    each command of redis-py's ``Redis`` (sync and asyncio) as
                     ``redis_<COMMAND>`` (``redis_GET``, ``redis_HSET``...; at most 64 names,
                     then ``redis_other``); a pipeline or transaction is one round trip,
                     counted once as ``redis_pipeline`` when it executes (its queued commands
                     are not counted one by one).
dbapi       db       ``execute``/``executemany`` of DB-API cursors as ``db_execute`` /
                     ``db_executemany``: sqlite3 (its ``Cursor`` is a C type that cannot be
                     patched, so ``sqlite3.connect`` gets a connection ``factory`` whose
                     cursors are watched -- connections made with a factory of your own, or
                     before ``configure()``, are not), psycopg 3 (``Cursor``, ``AsyncCursor``
                     and the server-side cursors; ``Connection.execute`` goes through them)
                     and PyMySQL (every cursor class; an ``executemany`` is one call even
                     though PyMySQL runs its own ``execute`` per row or batch inside).  Not
                     counted: psycopg's ``stream()`` and ``copy()``, PyMySQL's ``callproc()``.
                     psycopg2's C cursor is not covered: use ``cursor_factory`` or the
                     sqlalchemy preset.  With the sqlalchemy preset on too, give one of
                     them another group, or the ``db`` group counts each statement twice.
sqlalchemy  db       every statement an Engine sends to the database (ORM included) as
                     ``sqlalchemy_execute``, through SQLAlchemy's own
                     ``before/after_cursor_execute`` events.
requests    http     ``requests.Session.send``: each outgoing request, as ``http_requests``.
httpx       http     ``httpx.Client.send`` and ``httpx.AsyncClient.send``, as ``http_httpx``.
=========== ======== ==========================================================================

A preset whose library is not installed is a configuration error naming the package.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from . import _core
from .naming import sanitize

__all__ = ["PRESETS", "Preset"]


@dataclass(frozen=True)
class Preset:
    """One preset (``watch: [{preset: NAME}]``): the library it needs and how it patches it."""

    name: str
    group: str
    needs: tuple[str, ...]  # any one of these modules
    apply: Callable[[str, "Undo"], list[str]]  # (group, undo) -> what was patched
    metrics: tuple[str, ...] = ()  # the metric names it counts under (fnmatch patterns)


Undo = list[Callable[[], None]]


def _set(owner: Any, attr: str, new: Any, undo: Undo) -> None:
    missing = object()
    old = vars(owner).get(attr, missing)
    setattr(owner, attr, new)

    def restore() -> None:
        if vars(owner).get(attr) is not new:
            return
        if old is missing:
            delattr(owner, attr)
        else:
            setattr(owner, attr, old)

    undo.append(restore)


def _optional(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


# -- redis --------------------------------------------------------------------------------


def _redis_command(self: Any, *args: Any, **kwargs: Any) -> str:
    return str(args[0]).upper().replace(" ", "_") if args else "unknown"


def _apply_redis(group: str, undo: Undo) -> list[str]:
    done = []
    for modname in ("redis.client", "redis.asyncio.client"):
        mod = _optional(modname)
        if mod is None:
            continue
        redis_cls, pipeline_cls = mod.Redis, mod.Pipeline
        name_of: Callable[[str], str] = lambda key: sanitize(f"redis_{key}")  # noqa: E731
        cmd = _core.make_keyed_watched(vars(redis_cls)["execute_command"], _redis_command, name_of, group)
        _set(redis_cls, "execute_command", cmd, undo)
        _set(pipeline_cls, "execute", _core.make_watched(vars(pipeline_cls)["execute"], "redis_pipeline", group),
             undo)
        done.append(f"{modname}.Redis.execute_command, {modname}.Pipeline.execute")
    return done


# -- DB-API -------------------------------------------------------------------------------


def _apply_dbapi(group: str, undo: Undo) -> list[str]:
    done = []
    execute = _core.registry.function("db_execute", group)
    executemany = _core.registry.function("db_executemany", group)

    sqlite3 = _optional("sqlite3")
    if sqlite3 is not None:
        conn_cls, cursor_cls = _sqlite_classes(sqlite3, execute, executemany)
        original_connect = sqlite3.connect

        def connect(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("factory", conn_cls)
            return original_connect(*args, **kwargs)

        # sqlite3.dbapi2 is the module SQLAlchemy's pysqlite dialect connects through
        for module in (sqlite3, _optional("sqlite3.dbapi2")):
            if module is not None and vars(module).get("connect") is original_connect:
                _set(module, "connect", connect, undo)
        done.append("sqlite3.connect, sqlite3.dbapi2.connect (a watched connection factory)")

    for modname, classes in (("psycopg", ("Cursor", "ServerCursor", "AsyncCursor", "AsyncServerCursor")),
                             ("pymysql.cursors", ("Cursor",))):
        mod = _optional(modname)
        if mod is None:
            continue
        for cname in classes:
            klass = getattr(mod, cname, None)
            if klass is None:
                continue
            plain_execute = vars(klass).get("execute")
            if plain_execute is not None:
                _set(klass, "execute", _core.make_watched(plain_execute, execute.name, group), undo)
            fn = vars(klass).get("executemany")
            if fn is not None and modname == "pymysql.cursors" and plain_execute is not None:
                fn = _pymysql_executemany(klass, plain_execute, fn)
            if fn is not None:
                _set(klass, "executemany", _core.make_watched(fn, executemany.name, group), undo)
            done.append(f"{modname}.{cname}.execute/executemany")
    return done


def _pymysql_executemany(cursor_cls: type, plain_execute: Any, executemany: Any) -> Any:
    """PyMySQL's ``executemany`` calls ``self.execute()`` once per multi-row batch (INSERT ...
    VALUES) or once per row (anything else): parts of the one executemany call, not execute
    calls of the caller's.  During the call the cursor's ``execute`` is PyMySQL's own,
    unwatched, unless the cursor's class overrides ``execute`` (a subclass of the caller's:
    its calls, through ``super()``, are then counted as execute calls too)."""
    watched_execute = vars(cursor_cls)["execute"]
    plain: dict[type, bool] = {}  # cursor class -> execute is the watched one (decided once)

    @functools.wraps(executemany)
    def executemany_once(self: Any, query: Any, args: Any) -> Any:
        cls = type(self)
        inherited = plain.get(cls)
        if inherited is None:
            inherited = plain[cls] = inspect.getattr_static(cls, "execute", None) is watched_execute
        if not inherited:
            return executemany(self, query, args)
        self.execute = plain_execute.__get__(self, cls)  # an instance attribute shadows the class's
        try:
            return executemany(self, query, args)
        finally:
            del self.execute

    return executemany_once


def _sqlite_classes(sqlite3: Any, execute: Any, executemany: Any) -> tuple[type, type]:
    # _core._now is looked up per call, so FakeClock works in tests
    class WatchedCursor(sqlite3.Cursor):  # type: ignore[misc]
        def execute(self, *args: Any, **kwargs: Any) -> Any:
            t0 = _core._now()
            try:
                return super().execute(*args, **kwargs)
            finally:
                _core.add_call(execute, _core._now() - t0)

        def executemany(self, *args: Any, **kwargs: Any) -> Any:
            t0 = _core._now()
            try:
                return super().executemany(*args, **kwargs)
            finally:
                _core.add_call(executemany, _core._now() - t0)

    class WatchedConnection(sqlite3.Connection):  # type: ignore[misc]
        def cursor(self, factory: Any = WatchedCursor) -> Any:
            return super().cursor(factory)

        # Connection.execute() makes its cursor in C, bypassing cursor(): go through ours.
        def execute(self, *args: Any, **kwargs: Any) -> Any:
            return self.cursor().execute(*args, **kwargs)

        def executemany(self, *args: Any, **kwargs: Any) -> Any:
            return self.cursor().executemany(*args, **kwargs)

    return WatchedConnection, WatchedCursor


# -- SQLAlchemy ---------------------------------------------------------------------------


def _apply_sqlalchemy(group: str, undo: Undo) -> list[str]:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    entry = _core.registry.function("sqlalchemy_execute", group)
    key = "_callwatch_t0"

    def before(conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: Any) -> None:
        conn.info.setdefault(key, []).append(_core._now())

    def after(conn: Any, cursor: Any, statement: Any, parameters: Any, context: Any, executemany: Any) -> None:
        stack = conn.info.get(key)
        if stack:
            _core.add_call(entry, _core._now() - stack.pop())

    def error(context: Any) -> None:
        conn = context.connection
        stack = conn.info.get(key) if conn is not None else None
        if stack:
            _core.add_call(entry, _core._now() - stack.pop())

    event.listen(Engine, "before_cursor_execute", before)
    event.listen(Engine, "after_cursor_execute", after)
    event.listen(Engine, "handle_error", error)

    def remove() -> None:
        event.remove(Engine, "before_cursor_execute", before)
        event.remove(Engine, "after_cursor_execute", after)
        event.remove(Engine, "handle_error", error)

    undo.append(remove)
    return ["sqlalchemy Engine before/after_cursor_execute events"]


# -- HTTP clients -------------------------------------------------------------------------


def _apply_requests(group: str, undo: Undo) -> list[str]:
    import requests

    cls = requests.Session
    _set(cls, "send", _core.make_watched(vars(cls)["send"], "http_requests", group), undo)
    return ["requests.Session.send"]


def _apply_httpx(group: str, undo: Undo) -> list[str]:
    import httpx

    for cls in (httpx.Client, httpx.AsyncClient):
        _set(cls, "send", _core.make_watched(vars(cls)["send"], "http_httpx", group), undo)
    return ["httpx.Client.send, httpx.AsyncClient.send"]


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("redis", "redis", ("redis",), _apply_redis, ("redis_*",)),
        Preset("dbapi", "db", ("sqlite3", "psycopg", "pymysql"), _apply_dbapi, ("db_execute", "db_executemany")),
        Preset("sqlalchemy", "db", ("sqlalchemy",), _apply_sqlalchemy, ("sqlalchemy_execute",)),
        Preset("requests", "http", ("requests",), _apply_requests, ("http_requests",)),
        Preset("httpx", "http", ("httpx",), _apply_httpx, ("http_httpx",)),
    )
}


def missing_package(name: str) -> str | None:
    """The package a preset needs when none of its modules imports, else None."""
    preset = PRESETS[name]
    for module in preset.needs:
        try:
            importlib.import_module(module)
            return None
        except ImportError:
            continue
    return preset.needs[0]
