"""The gevent command server of benchmarks/macro_gevent.py and benchmarks/latency.py,
shaped like the seed's servers; benchmarks/_servers.py starts it:

    python benchmarks/_cmdserver.py MODE PORT REDIS_PORT DB GRAPHITE_PORT

A haven ``GHaven`` (gevent, one greenlet per connection, dispatching by command id), its
process patched by ``gevent.monkey`` so that redis-py and PyMySQL yield while they wait,
as a gevent server's data calls do.  Two commands:

  TABLE_VIEW (1)  a session and each player's profile from redis, the table and each
                  player from the database: 1 + 7 redis round trips, 1 + 7 queries
  LOGIN (2)       the session from redis, one player from the database

DB is ``sqlite`` (in memory, in the server) or ``mysql:<port>`` (MariaDB on loopback
through PyMySQL, a pool of connections, seeded by the driver with ``SCHEMA``).  MODE is
``bare`` (no callwatch at all), ``callwatch``: configured at its defaults with the
profile section present (so profiling is on, at its default rate and budget), only the
flush interval at 1 s so that flushes happen within short rounds, sent to the driver's
receiver; the four data functions watched (groups redis and db) and every route made a
handler by ``callwatch.integrations.maple.instrument``; or ``callwatch-noprof``: the
same without the profile section (profiling off); ``bare-again`` is ``bare`` in a second
process, the A/A row that shows what two identical servers differ by.  With CMDSERVER_HUB_LAG=1 in its
environment the server also measures how long its gevent hub is held (``watch_hub``).
"""

from __future__ import annotations

if __name__ == "__main__":  # patched before anything imports socket or threading
    from gevent import monkey

    monkey.patch_all()

import os
import sys
import time
from typing import Any, Callable

MODES = ("bare", "callwatch", "callwatch-noprof", "bare-again")
TABLE_VIEW, LOGIN = 1, 2
PLAYERS = 7
POOL = 16  # database connections per server: more than the greenlets that wait on one at a time


class Data:
    """The server's redis client and database; ``one(sql, args)`` returns one row."""

    def __init__(self, redis_port: int, db: str) -> None:
        import redis

        self.r = redis.Redis(port=redis_port)
        self.mark = "?"
        if db == "sqlite":
            import sqlite3

            conn = sqlite3.connect(":memory:")
            for stmt in SCHEMA:
                conn.execute(stmt)
            self.one: Callable[[str, tuple[Any, ...]], Any] = \
                lambda sql, args: conn.execute(sql, args).fetchone()
        else:
            self.mark = "%s"
            self.one = mysql_pool(int(db.split(":")[1]))

    def sql(self, text: str) -> str:
        return text.replace("?", self.mark)


SCHEMA = ["CREATE TABLE t (id INTEGER PRIMARY KEY, name VARCHAR(20))",
          "CREATE TABLE p (id INTEGER PRIMARY KEY, name VARCHAR(20), chips INT)",
          "INSERT INTO t VALUES (1, 'table')"] + \
         [f"INSERT INTO p VALUES ({i}, 'p{i}', 1000)" for i in range(PLAYERS)]


def mysql_pool(port: int) -> Callable[[str, tuple[Any, ...]], Any]:
    import gevent.queue
    import pymysql

    pool: gevent.queue.Queue[Any] = gevent.queue.Queue()
    for _ in range(POOL):
        pool.put(pymysql.connect(host="127.0.0.1", port=port, user="app", password="app", database="app",
                                 autocommit=True))

    def one(sql: str, args: tuple[Any, ...]) -> Any:
        conn = pool.get()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchone()
        finally:
            pool.put(conn)
    return one


def data_functions(data: Data) -> dict[str, Callable[[int], Any]]:
    """name -> function, the four calls a callwatch server watches."""
    table_sql, player_sql = data.sql("SELECT id, name FROM t WHERE id = ?"), \
        data.sql("SELECT id, name, chips FROM p WHERE id = ?")
    return {"get_session": lambda uid: data.r.get(f"session:{uid}"),
            "get_profile": lambda pid: data.r.get(f"profile:{pid}"),
            "load_table": lambda tid: data.one(table_sql, (tid,)),
            "load_player": lambda pid: data.one(player_sql, (pid,))}


HUB_LAG = "CMDSERVER_HUB_LAG"  # in the environment, "1": run watch_hub() in the server


def watch_hub() -> None:
    """A greenlet that asks to wake every millisecond and counts how late it wakes: late
    by more than a few ms means the hub was held (by one greenlet's CPU work, or by the
    run queue of ready ones), and every request waited that long.  Prints its running
    totals once a second: ``hub-lag <over 10 ms> <over 50 ms> <longest, ms>``."""
    import gevent

    over10 = over50 = 0
    worst = 0.0
    last = time.perf_counter()
    while True:
        t = time.perf_counter()
        gevent.sleep(0.001)
        lag = time.perf_counter() - t - 0.001
        over10 += lag > 0.01
        over50 += lag > 0.05
        worst = max(worst, lag)
        if t - last >= 1:
            print(f"hub-lag {over10} {over50} {1e3 * worst:.1f}", flush=True)
            last = t


GROUPS = {"get_session": "redis", "get_profile": "redis", "load_table": "db", "load_player": "db"}


def serve(mode: str, port: int, redis_port: int, db: str, graphite_port: int) -> None:
    from haven import GHaven
    from netkit.box import Box

    calls = data_functions(Data(redis_port, db))
    if not mode.startswith("bare"):
        import callwatch

        cfg: dict[str, Any] = {"naming": {"worker": "none"},
                               "graphite": {"host": "127.0.0.1", "port": graphite_port, "interval": 1}}
        if mode == "callwatch":
            # "profile": {} turns sampled profiling on (left out, it is off) at its default
            # rate and budget, whatever those are in the callwatch under test.
            cfg["profile"] = {}
        callwatch.configure(cfg, strict=True)
        calls = {n: callwatch.watch(name=n, group=GROUPS[n])(f) for n, f in calls.items()}
    sess, prof, table, player = (calls[n] for n in ("get_session", "get_profile", "load_table", "load_player"))
    app = GHaven(Box)

    @app.route(TABLE_VIEW)  # type: ignore[untyped-decorator]
    def table_view(request: Any) -> None:
        sess(1)
        n = len(table(1))
        for pid in range(PLAYERS):
            prof(pid)
            n += len(player(pid))
        request.write(dict(ret=0, body=str(n)))

    @app.route(LOGIN)  # type: ignore[untyped-decorator]
    def login(request: Any) -> None:
        sess(1)
        request.write(dict(ret=0, body=str(len(player(request.box.sn % PLAYERS)))))

    if not mode.startswith("bare"):
        from callwatch.integrations.maple import instrument

        instrument(app)
    if os.environ.get(HUB_LAG) == "1":
        import gevent

        gevent.spawn(watch_hub)
    app.run("127.0.0.1", port)


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] not in MODES:
        raise SystemExit(f"{__doc__}\nMODE is one of {', '.join(MODES)}, not {sys.argv[1:2]}")
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
