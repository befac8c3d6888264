"""The database presets against real servers: psycopg 3 on PostgreSQL 15, PyMySQL on MariaDB,
SQLAlchemy (psycopg driver) on PostgreSQL (servers: tests/dbservers).

A handler makes known queries; the interval goes through the whole pipeline (wrappers ->
collector -> exporter -> metric lines) into a recording sender.  Calls are exact.  Time per
request is the watched time: at least the server-side sleep the queries contain (a lower
bound the server imposes), at most the time the test itself measured around the same calls
(an upper bound taken outside callwatch), and at most the response time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Iterator

import pytest

import callwatch
from callwatch.testing import FakeClock, RecordingSender

from dbservers.fixtures import mariadb, pg_dsn  # noqa: F401  (session fixtures)

T0 = 1_699_999_980  # a multiple of the interval (60 s)
INTERVAL = 60
SLEEP_S = 0.005  # each request's one server-side sleep
N = 12  # requests per test


class Interval:
    """configure() with a recording sender and a wall clock that stands still (durations are
    real), so all requests fall into the interval starting at T0; ``lines()`` ends it."""

    def __init__(self, *watch: dict[str, str]) -> None:
        self.clock, self.sender = FakeClock(T0 + 1), RecordingSender()
        callwatch.configure({"graphite": {"host": "unused.invalid", "interval": INTERVAL, "prefix": "cw"},
                             "naming": {"host": "h"}, "watch": list(watch)},
                            sender=self.sender, clock=self.clock, start_thread=False, strict=True)
        self.outer_ns: dict[str, int] = {}  # the test's own measurement around watched calls

    def timed(self, key: str, call: Callable[[], Any]) -> Any:
        t0 = time.perf_counter_ns()
        try:
            return call()
        finally:
            self.outer_ns[key] = self.outer_ns.get(key, 0) + time.perf_counter_ns() - t0

    async def atimed(self, key: str, call: Callable[[], Any]) -> Any:
        t0 = time.perf_counter_ns()
        try:
            return await call()
        finally:
            self.outer_ns[key] = self.outer_ns.get(key, 0) + time.perf_counter_ns() - t0

    def lines(self, handler: str) -> dict[str, float]:
        self.clock.advance(INTERVAL)
        callwatch.flush()
        values = self.sender.values()
        assert {ts for _, ts in values} == {T0}
        base = f"cw.h_w0.handler.{handler}."
        return {name[len(base):]: v for (name, _), v in values.items() if name.startswith(base)}


def assert_calls(got: dict[str, float], per_request: dict[str, int]) -> None:
    """Exact calls, total and per request, of each watched function and group."""
    for fn, k in per_request.items():
        assert (got[f"{fn}.calls"], got[f"{fn}.calls_per_request.mean"], got[f"{fn}.calls_per_request.max"]) \
            == (N * k, k, k), fn
    unexpected = {m for m in got if m.startswith(("watch.", "group.")) and m.rsplit(".calls", 1)[0] not in per_request
                  and m.endswith(".calls")}
    assert not unexpected


def assert_time(got: dict[str, float], fn: str, outer_ns: int, min_ms_per_request: float) -> None:
    """The watched time per request: real, within the server's sleep and the outer measurement."""
    ms, per_request = got[f"{fn}.ms"], got[f"{fn}.ms_per_request.mean"]
    assert per_request == pytest.approx(ms / N, abs=1e-5)
    assert min_ms_per_request <= per_request <= got["response_ms.mean"]
    assert ms <= outer_ns / 1e6 + 1e-3
    assert got[f"{fn}.ms_per_request.max"] <= got["response_ms.max"]


def assert_execute_times(got: dict[str, float], iv: Any) -> None:
    """``assert_time`` for execute (which slept on the server), executemany and their group."""
    assert_time(got, "watch.db_execute", iv.outer_ns["execute"], SLEEP_S * 1000)
    assert_time(got, "watch.db_executemany", iv.outer_ns["executemany"], 0.0)
    assert_time(got, "group.db", iv.outer_ns["execute"] + iv.outer_ns["executemany"], SLEEP_S * 1000)


# -- psycopg 3 on PostgreSQL --------------------------------------------------------------


@pytest.fixture
def pg_tables(pg_dsn: str) -> Iterator[None]:  # noqa: F811
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS items, log")
        c.execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)")
        c.execute("INSERT INTO items SELECT i, 0 FROM generate_series(1, 5) i")
        c.execute("CREATE TABLE log (x int)")
    yield


def test_psycopg_sync_cursor_connection_and_server_cursor(pg_dsn: str, pg_tables: None) -> None:  # noqa: F811
    import psycopg

    iv = Interval({"preset": "dbapi"})
    conn = psycopg.connect(pg_dsn)

    @callwatch.handler("pg_report")
    def report() -> int:
        with conn.cursor() as cur:
            iv.timed("execute", lambda: cur.execute("SELECT pg_sleep(%s)", (SLEEP_S,)))
            iv.timed("execute", lambda: cur.execute("SELECT count(*) FROM items"))
            (count,) = cur.fetchone()  # type: ignore[misc]
            iv.timed("executemany", lambda: cur.executemany("INSERT INTO log (x) VALUES (%s)", [(1,), (2,), (3,)]))
        iv.timed("execute", lambda: conn.execute("UPDATE items SET n = n + 1 WHERE id = %s", (1,)))
        with conn.cursor(name="scan") as scur:  # a server-side cursor: psycopg.ServerCursor
            iv.timed("execute", lambda: scur.execute("SELECT id FROM items ORDER BY id"))
            assert [r[0] for r in scur.fetchall()] == [1, 2, 3, 4, 5]
        conn.commit()
        return int(count)

    assert [report() for _ in range(N)] == [5] * N
    conn.close()
    got = iv.lines("pg_report")
    assert got["requests"] == N
    assert_calls(got, {"watch.db_execute": 4, "watch.db_executemany": 1, "group.db": 5})
    assert_execute_times(got, iv)
    with psycopg.connect(pg_dsn) as c:  # the statements really ran
        assert c.execute("SELECT n FROM items WHERE id = 1").fetchone() == (N,)
        assert c.execute("SELECT count(*), sum(x) FROM log").fetchone() == (3 * N, 6 * N)


def test_psycopg_async_requests_in_flight_together(pg_dsn: str, pg_tables: None) -> None:  # noqa: F811
    import psycopg

    iv = Interval({"preset": "dbapi", "group": "pg"})

    @callwatch.handler("pg_async")
    async def handle(conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.cursor() as cur:
            await iv.atimed("execute", lambda: cur.execute("SELECT pg_sleep(%s)", (SLEEP_S,)))
            await iv.atimed("executemany", lambda: cur.executemany("INSERT INTO log (x) VALUES (%s)", [(1,), (2,)]))
        await iv.atimed("execute", lambda: conn.execute("SELECT count(*) FROM log"))
        await conn.commit()

    async def main() -> None:
        conns = [await psycopg.AsyncConnection.connect(pg_dsn) for _ in range(4)]
        try:
            for _ in range(N // 4):  # 4 requests in flight at a time, each on its own connection
                await asyncio.wait_for(asyncio.gather(*(handle(c) for c in conns)), 30)
        finally:
            for c in conns:
                await c.close()

    asyncio.run(main())
    got = iv.lines("pg_async")
    assert got["requests"] == N
    assert_calls(got, {"watch.db_execute": 2, "watch.db_executemany": 1, "group.pg": 3})
    # The outer measurement of concurrent requests overlaps in wall time, so it bounds the sum.
    assert_time(got, "watch.db_execute", iv.outer_ns["execute"], SLEEP_S * 1000)
    assert_time(got, "group.pg", iv.outer_ns["execute"] + iv.outer_ns["executemany"], SLEEP_S * 1000)


# -- PyMySQL on MariaDB -------------------------------------------------------------------


@pytest.fixture
def maria_conn(mariadb: dict[str, Any]) -> Iterator[Any]:  # noqa: F811
    import pymysql

    conn = pymysql.connect(**mariadb)
    with conn.cursor() as c:
        c.execute("DROP TABLE IF EXISTS items, log")
        c.execute("CREATE TABLE items (id INT PRIMARY KEY, n INT NOT NULL)")
        c.execute("INSERT INTO items VALUES (1, 0), (2, 0), (3, 0)")
        c.execute("CREATE TABLE log (x INT)")
    conn.commit()
    yield conn
    conn.close()


def test_pymysql_cursor_dict_cursor_and_both_executemany_paths(maria_conn: Any) -> None:
    import pymysql

    iv = Interval({"preset": "dbapi"})

    @callwatch.handler("maria_report")
    def report() -> int:
        with maria_conn.cursor() as cur:
            iv.timed("execute", lambda: cur.execute("SELECT SLEEP(%s)", (SLEEP_S,)))
            iv.timed("execute", lambda: cur.execute("SELECT COUNT(*) FROM items"))
            (count,) = cur.fetchone()
            # PyMySQL sends an INSERT ... VALUES executemany as one multi-row statement and any
            # other one row by row, both through its own execute(): still one executemany call.
            iv.timed("executemany", lambda: cur.executemany("INSERT INTO log (x) VALUES (%s)", [(1,), (2,), (3,)]))
            iv.timed("executemany", lambda: cur.executemany("UPDATE items SET n = n + 1 WHERE id = %s", [(1,), (2,)]))
        with maria_conn.cursor(pymysql.cursors.DictCursor) as dcur:
            iv.timed("execute", lambda: dcur.execute("SELECT id FROM items WHERE id = %s", (3,)))
            assert dcur.fetchone() == {"id": 3}
        maria_conn.commit()
        return int(count)

    assert [report() for _ in range(N)] == [3] * N
    got = iv.lines("maria_report")
    assert got["requests"] == N
    assert_calls(got, {"watch.db_execute": 3, "watch.db_executemany": 2, "group.db": 5})
    assert_execute_times(got, iv)
    with maria_conn.cursor() as c:  # the statements really ran
        c.execute("SELECT n FROM items WHERE id = 2")
        assert c.fetchone() == (N,)
        c.execute("SELECT COUNT(*), SUM(x) FROM log")
        assert c.fetchone() == (3 * N, 6 * N)


def test_pymysql_executemany_with_a_cursor_that_overrides_execute(maria_conn: Any) -> None:
    # A cursor class of the user's own that overrides execute: its override (and PyMySQL's
    # execute behind it, through super()) runs for each row, and is counted as an execute.
    import pymysql.cursors

    class Logged(pymysql.cursors.Cursor):
        seen: list[str] = []

        def execute(self, query: Any, args: Any = None) -> Any:
            self.seen.append(str(query))
            return super().execute(query, args)

    iv = Interval({"preset": "dbapi"})
    with callwatch.request("maria_logged"):
        with maria_conn.cursor(Logged) as cur:
            assert cur.executemany("UPDATE items SET n = n + 1 WHERE id = %s", [(1,), (2,)]) == 2
    maria_conn.commit()
    got = iv.lines("maria_logged")
    assert Logged.seen == ["UPDATE items SET n = n + 1 WHERE id = %s"] * 2
    assert (got["watch.db_executemany.calls"], got["watch.db_execute.calls"], got["group.db.calls"]) == (1, 2, 3)


def test_pymysql_preset_is_undone(maria_conn: Any) -> None:
    import pymysql.cursors

    originals = {k: vars(pymysql.cursors.Cursor)[k] for k in ("execute", "executemany")}
    Interval({"preset": "dbapi"})
    assert all(vars(pymysql.cursors.Cursor)[k] is not f for k, f in originals.items())
    callwatch.shutdown()
    assert {k: vars(pymysql.cursors.Cursor)[k] for k in originals} == originals
    with maria_conn.cursor() as cur:
        assert cur.executemany("INSERT INTO log (x) VALUES (%s)", [(7,), (8,)]) == 2


# -- SQLAlchemy (psycopg driver) on PostgreSQL -----------------------------------------------


@pytest.fixture
def pg_engine(pg_dsn: str, pg_tables: None) -> Iterator[Any]:  # noqa: F811
    import sqlalchemy as sa

    kv = dict(p.split("=") for p in pg_dsn.split())
    engine = sa.create_engine(f"postgresql+psycopg://app:app@127.0.0.1:{kv['port']}/app")
    with engine.connect() as c:  # the dialect's first-connect queries happen before configure()
        c.execute(sa.text("SELECT 1"))
    yield engine
    engine.dispose()


def sa_request(iv: Interval, engine: Any) -> None:
    import sqlalchemy as sa

    with engine.begin() as c:
        iv.timed("sa", lambda: c.execute(sa.text("SELECT pg_sleep(:s)"), {"s": SLEEP_S}))
        iv.timed("sa", lambda: c.execute(sa.text("SELECT count(*) FROM items")).scalar())
        iv.timed("sa", lambda: c.execute(sa.text("UPDATE items SET n = n + 1 WHERE id = :i"), [{"i": 1}, {"i": 2}]))


def test_sqlalchemy_on_postgresql(pg_engine: Any) -> None:
    iv = Interval({"preset": "sqlalchemy"})
    handle = callwatch.handler("sa_report")(lambda: sa_request(iv, pg_engine))
    for _ in range(N):
        handle()
    got = iv.lines("sa_report")
    assert got["requests"] == N
    assert_calls(got, {"watch.sqlalchemy_execute": 3, "group.db": 3})
    assert_time(got, "watch.sqlalchemy_execute", iv.outer_ns["sa"], SLEEP_S * 1000)


def test_sqlalchemy_and_dbapi_presets_see_the_same_statements(pg_engine: Any) -> None:
    # SQLAlchemy's psycopg dialect sends through psycopg's cursors: the dbapi preset sees each
    # statement too (as execute, or executemany for the UPDATE's two parameter sets).
    iv = Interval({"preset": "sqlalchemy", "group": "orm"}, {"preset": "dbapi", "group": "driver"})
    handle = callwatch.handler("sa_both")(lambda: sa_request(iv, pg_engine))
    for _ in range(N):
        handle()
    got = iv.lines("sa_both")
    assert_calls(got, {"watch.sqlalchemy_execute": 3, "group.orm": 3,
                       "watch.db_execute": 2, "watch.db_executemany": 1, "group.driver": 3})
    assert_time(got, "group.driver", iv.outer_ns["sa"], SLEEP_S * 1000)
    # the driver's time is part of what SQLAlchemy times around it (cursor events bracket it)
    assert got["group.driver.ms"] <= got["group.orm.ms"] + 1e-3


def test_sqlalchemy_asyncio_engine_on_postgresql(pg_dsn: str, pg_tables: None) -> None:  # noqa: F811
    # An AsyncEngine runs SQLAlchemy's sync core in greenlets: the cursor events must still
    # land in the request that awaits them, with requests in flight together.
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import create_async_engine

    kv = dict(p.split("=") for p in pg_dsn.split())
    engine = create_async_engine(f"postgresql+psycopg://app:app@127.0.0.1:{kv['port']}/app", pool_size=4)
    iv = Interval({"preset": "sqlalchemy", "group": "orm"}, {"preset": "dbapi", "group": "driver"})

    @callwatch.handler("sa_async")
    async def handle() -> None:
        async with engine.begin() as c:
            await iv.atimed("sa", lambda: c.execute(sa.text("SELECT pg_sleep(:s)"), {"s": SLEEP_S}))
            await iv.atimed("sa", lambda: c.execute(sa.text("UPDATE items SET n = n + 1 WHERE id = 3")))

    async def main() -> None:
        async with engine.connect() as c:  # first-connect queries of the dialect, outside any request
            await c.execute(sa.text("SELECT 1"))
        try:
            for _ in range(N // 4):
                await asyncio.wait_for(asyncio.gather(*(handle() for _ in range(4))), 30)
        finally:
            await engine.dispose()

    asyncio.run(main())
    got = iv.lines("sa_async")
    assert got["requests"] == N
    assert_calls(got, {"watch.sqlalchemy_execute": 2, "group.orm": 2, "watch.db_execute": 2, "group.driver": 2})
    assert_time(got, "watch.sqlalchemy_execute", iv.outer_ns["sa"], SLEEP_S * 1000)
    assert_time(got, "group.driver", iv.outer_ns["sa"], SLEEP_S * 1000)


# -- sqlite3 through SQLAlchemy ---------------------------------------------------------------


def test_dbapi_preset_sees_sqlalchemys_sqlite_connections() -> None:
    # SQLAlchemy's pysqlite dialect connects with sqlite3.dbapi2.connect, not sqlite3.connect.
    import sqlite3.dbapi2

    import sqlalchemy as sa

    original = sqlite3.dbapi2.connect
    iv = Interval({"preset": "dbapi"})
    engine = sa.create_engine("sqlite://")
    with engine.connect() as c:  # the dialect's first-connect statements, outside the request
        c.execute(sa.text("SELECT 1"))
    with callwatch.request("sqlite_sa"):
        with engine.connect() as c:
            c.execute(sa.text("CREATE TABLE t (x)"))
            c.execute(sa.text("INSERT INTO t VALUES (:x)"), [{"x": 1}, {"x": 2}])
            assert c.execute(sa.text("SELECT sum(x) FROM t")).scalar() == 3
    got = iv.lines("sqlite_sa")
    assert (got["requests"], got["watch.db_execute.calls"], got["watch.db_executemany.calls"],
            got["group.db.calls"]) == (1, 2, 1, 3)
    callwatch.shutdown()
    assert sqlite3.dbapi2.connect is original and sqlite3.connect is original
