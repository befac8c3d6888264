"""A gevent command server shaped like the seed's, and the clients that drive it, for
benchmarks/macro_gevent.py and benchmarks/latency.py.

    python benchmarks/_servers.py serve MODE PORT REDIS_PORT DB GRAPHITE_PORT

The server is a haven ``GHaven`` (gevent, one greenlet per connection, dispatching by
command id), its process patched by ``gevent.monkey`` so that redis-py and PyMySQL
yield while they wait, as a gevent server's data calls do.  Two commands:

  TABLE_VIEW (1)  a session and each player's profile from redis, the table and each
                  player from the database: 1 + 7 redis round trips, 1 + 7 queries
  LOGIN (2)       the session from redis, one player from the database

DB is ``sqlite`` (in memory, in the server) or ``mysql:<port>`` (MariaDB on loopback
through PyMySQL, a pool of connections; seeded once by ``seed_mysql``).  MODE is ``bare``
(no callwatch at all) or ``callwatch``: configured at its defaults (profiling included),
only the flush interval at 1 s so that flushes happen within short rounds and sent to a
discarding receiver; the four data functions watched (groups redis and db) and every
route made a handler by ``callwatch.integrations.maple.instrument``.

The driver side (``Servers``) starts redis-server, optionally MariaDB (the test suite's
tests/dbservers scripts), both servers and the Graphite sink, pins the servers to one CPU
and everything else to the other, and stops all of it on exit.
"""

from __future__ import annotations

if __name__ == "__main__":  # the server: patched before anything imports socket or threading
    from gevent import monkey

    monkey.patch_all()

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
DBSERVERS = HERE.parent / "tests" / "dbservers"
TABLE_VIEW, LOGIN = 1, 2
PLAYERS = 7
POOL = 16  # database connections per server: more than the greenlets that wait on one at a time


# ---------------------------------------------------------------- the server (subprocess)

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


GROUPS = {"get_session": "redis", "get_profile": "redis", "load_table": "db", "load_player": "db"}


def serve(mode: str, port: int, redis_port: int, db: str, graphite_port: int) -> None:
    from haven import GHaven
    from netkit.box import Box

    calls = data_functions(Data(redis_port, db))
    if mode == "callwatch":
        import callwatch

        callwatch.configure({"naming": {"worker": "none"},
                             "graphite": {"host": "127.0.0.1", "port": graphite_port, "interval": 1}},
                            strict=True)
        calls = {n: callwatch.watch(name=n, group=GROUPS[n])(f) for n, f in calls.items()}
    sess, prof, table, player = (calls[n] for n in ("get_session", "get_profile", "load_table", "load_player"))
    app = GHaven(Box)

    @app.route(TABLE_VIEW)
    def table_view(request: Any) -> None:
        sess(1)
        n = len(table(1))
        for pid in range(PLAYERS):
            prof(pid)
            n += len(player(pid))
        request.write(dict(ret=0, body=str(n)))

    @app.route(LOGIN)
    def login(request: Any) -> None:
        sess(1)
        request.write(dict(ret=0, body=str(len(player(request.box.sn % PLAYERS)))))

    if mode == "callwatch":
        from callwatch.integrations.maple import instrument

        instrument(app)
    app.run("127.0.0.1", port)


# ---------------------------------------------------------------- the driver side

def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    from macro import start_redis as start  # one place for how a benchmark starts redis-server

    return start()


def seed_mysql(port: int) -> None:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=port, user="app", password="app", database="app",
                           autocommit=True)
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS t, p")
        for stmt in SCHEMA:
            cur.execute(stmt)
    conn.close()


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pin(servers: list[int], others: list[int]) -> str:
    """The command servers on one CPU, redis/MariaDB and the client on the other: the
    servers then do not share a CPU with the load they are measured under."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return "not pinned (one CPU)"
        for pid in servers:
            os.sched_setaffinity(pid, {cpus[0]})
        for pid in others:
            os.sched_setaffinity(pid, {cpus[-1]})
        return f"servers on CPU {cpus[0]}; redis, database and client on CPU {cpus[-1]}"
    except OSError as e:
        return f"not pinned ({e})"


class Servers:
    """``with Servers(db) as s:`` s.ports[mode], s.pids[mode], s.pinned, for MODES."""

    MODES = ("bare", "callwatch")

    def __init__(self, db: str) -> None:
        self.db = db
        self.procs: list[subprocess.Popen[bytes]] = []
        self.cleanups: list[Callable[[], None]] = []
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.logs: dict[str, Path] = {}
        self.others: list[int] = []  # redis-server, MariaDB, this driver
        self.pinned = ""

    def __enter__(self) -> Servers:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        from macro import free_port

        redis, redis_port = start_redis()
        self.procs.append(redis)
        others = [redis.pid, os.getpid()]
        db = self.db
        if db == "mysql":
            mysql_port, base = free_port(), tempfile.mkdtemp(prefix="callwatch-bench-maria-")
            self.cleanups.append(lambda: subprocess.run(["bash", str(DBSERVERS / "maria-down.sh"), base],
                                                        timeout=60, check=False))
            out = subprocess.run(["bash", str(DBSERVERS / "maria-up.sh"), base, str(mysql_port)], timeout=120,
                                 check=True, capture_output=True, text=True)
            others.append(int(out.stdout.split()[-1]))
            seed_mysql(mysql_port)
            db = f"mysql:{mysql_port}"
        import redis as redis_py

        r = redis_py.Redis(port=redis_port)
        r.set("session:1", "s")
        for i in range(PLAYERS):
            r.set(f"profile:{i}", f"profile-{i}")
        r.close()
        self.cleanups.append(start_sink())
        for mode in self.MODES:
            port = free_port()
            log = Path(tempfile.mkdtemp(prefix="callwatch-bench-")) / f"{mode}.log"
            with log.open("wb") as out:  # haven prints a traceback when it is terminated
                p = subprocess.Popen([sys.executable, __file__, "serve", mode, str(port), str(redis_port), db,
                                      str(SINK_PORT[0])], stdout=out, stderr=subprocess.STDOUT)
            self.logs[mode] = log
            self.procs.append(p)
            self.ports[mode], self.pids[mode] = port, p.pid
            wait_listening(port, p, log)
        self.pinned = pin(list(self.pids.values()), others)
        self.others = others

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for cleanup in reversed(self.cleanups):
            cleanup()
        for mode, log in self.logs.items():  # what callwatch said in a server is part of the result
            said = [line for line in log.read_text(errors="replace").splitlines() if "callwatch" in line]
            if said:
                print(f"the {mode} server's log ({log}) mentions callwatch:", *said[:10], sep="\n  ", file=sys.stderr)


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    import socket

    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"the command server on port {port} exited with {proc.returncode}; its output "
                             f"({log}):\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the command server on port {port} did not listen within 15 s")


SINK_PORT = [0]


def start_sink() -> Callable[[], None]:
    """A Graphite receiver that reads until the sender closes, and discards; a thread of
    its own, so that it answers whatever this driver's hub is doing."""
    import socketserver
    import threading

    class Discard(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            while self.request.recv(65536):
                pass

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Discard)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="graphite-sink", daemon=True).start()
    SINK_PORT[0] = server.server_address[1]

    def stop() -> None:
        server.shutdown()
        server.server_close()
    return stop


class Conn:
    """One client connection: ``call(cmd)`` sends a box and waits for its answer."""

    def __init__(self, port: int) -> None:
        from gevent import socket
        from netkit.box import Box

        self.box = Box
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.sn = 0

    def call(self, cmd: int) -> None:
        self.sn += 1
        self.sock.sendall(self.box(dict(cmd=cmd, sn=self.sn)).pack())
        box = self.box()
        while (used := box.unpack(self.buf)) == 0:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the command server closed the connection")
            self.buf += chunk
        if used < 0 or box.ret != 0:
            raise ValueError(f"bad answer: {self.buf[:200]!r}")
        self.buf = self.buf[used:]

    def close(self) -> None:
        self.sock.close()


def mix(i: int) -> int:
    """The command of request i: table views and logins in turn."""
    return TABLE_VIEW if i % 2 == 0 else LOGIN


def closed_loop(port: int, clients: int, seconds: float) -> tuple[int, float]:
    """``clients`` connections each sending its next request as soon as the last is
    answered, for ``seconds``; -> (answers, elapsed seconds)."""
    import gevent

    conns = [Conn(port) for _ in range(clients)]
    done = [0]
    end = time.perf_counter() + seconds

    def run(conn: Conn) -> None:
        i = 0
        while time.perf_counter() < end:
            conn.call(mix(i))
            i += 1
            done[0] += 1
    t = time.perf_counter()
    jobs = [gevent.spawn(run, c) for c in conns]
    gevent.joinall(jobs, timeout=seconds + 30, raise_error=True)
    elapsed = time.perf_counter() - t
    for c in conns:
        c.close()
    return done[0], elapsed


def rounds_order(r: int) -> Iterator[str]:
    """Bare first in even rounds, callwatch first in odd ones: neither always runs on a
    machine warmed (or loaded) by the other."""
    return iter(Servers.MODES if r % 2 == 0 else Servers.MODES[::-1])


if __name__ == "__main__":
    if sys.argv[1:2] != ["serve"]:
        raise SystemExit(__doc__)
    serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]))
