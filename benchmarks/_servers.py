"""Start and stop the servers of benchmarks/macro_gevent.py and benchmarks/latency.py,
and drive them.

``with Servers(db) as s:`` starts redis-server, MariaDB for ``db="mysql"`` (the test
suite's tests/dbservers scripts), a Graphite receiver, and two command servers
(benchmarks/_cmdserver.py), one per mode: ``bare`` and ``callwatch``, identical otherwise.
It pins both command servers to one CPU and everything else (redis, MariaDB, this
client) to the other, and on exit stops all it started and prints what callwatch logged.
``Conn``, ``closed_loop`` and ``mix`` are the client side.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

from _cmdserver import HUB_LAG, LOGIN, MODES, PLAYERS, SCHEMA, TABLE_VIEW

HERE = Path(__file__).resolve().parent
DBSERVERS = HERE.parent / "tests" / "dbservers"
SERVER = HERE / "_cmdserver.py"


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    from macro import start_redis as start  # one place for how a benchmark starts redis-server

    return start()


def run_script(name: str, *args: str) -> str:
    """Run one of the test suite's tests/dbservers scripts; -> its output."""
    done = subprocess.run(["bash", str(DBSERVERS / name), *args], timeout=120, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def seed_redis(port: int) -> None:
    import redis

    r = redis.Redis(port=port)
    r.set("session:1", "s")
    for i in range(PLAYERS):
        r.set(f"profile:{i}", f"profile-{i}")
    r.close()


def seed_mysql(port: int) -> None:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=port, user="app", password="app", database="app",
                           autocommit=True)
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS t, p")
        for stmt in SCHEMA:
            cur.execute(stmt)
    conn.close()


def header(what: str) -> str:
    """The lines that open a report: Python, the two rows, and the run's set-up."""
    wrapper = "pure-Python" if os.environ.get("CALLWATCH_PURE_PYTHON", "") not in ("", "0") else \
        "C (unless not built)"
    return (f"Python {sys.version.split()[0]}, callwatch's watched wrapper: {wrapper}; {what}\n"
            "rows: bare = the server without callwatch; callwatch = the same server with callwatch at its "
            "defaults (profiling on at its default rate and budget, flush every 1 s), both commands handlers, "
            "the 4 data functions watched; callwatch-noprof = the same without the profile section")


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
    """``with Servers(db, modes) as s:`` s.ports[mode], s.pids[mode], s.pinned; modes are
    _cmdserver's (bare, callwatch, callwatch-noprof)."""

    def __init__(self, db: str, modes: tuple[str, ...] = ("bare", "callwatch"), hub_lag: bool = False) -> None:
        assert set(modes) <= set(MODES), modes
        self.env = dict(os.environ, **{HUB_LAG: "1" if hub_lag else "0"})
        self.db = db
        self.modes = modes
        self.procs: list[subprocess.Popen[bytes]] = []
        self.cleanups: list[Callable[[], object]] = []
        self.ports: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.logs: dict[str, Path] = {}
        self.others: list[int] = []  # redis-server, MariaDB, this driver
        self.sinks: dict[str, Sink] = {}  # per callwatch mode: what its server sent
        self.pinned = ""
        self.tmp = Path(tempfile.mkdtemp(prefix="callwatch-bench-"))

    def __enter__(self) -> Servers:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self) -> None:
        redis, redis_port = start_redis()
        self.procs.append(redis)
        self.others = [redis.pid, os.getpid()]
        seed_redis(redis_port)
        db = self._start_mysql() if self.db == "mysql" else self.db
        for mode in self.modes:
            sink = self.sinks[mode] = Sink()
            self.cleanups.append(sink.stop)
            self._start_server(mode, redis_port, db, sink.port)
        self.pinned = pin(list(self.pids.values()), self.others)

    def _start_mysql(self) -> str:
        """MariaDB on loopback, seeded; -> the server's DB argument."""
        from macro import free_port

        port, base = free_port(), str(self.tmp / "maria")
        self.cleanups.append(lambda: run_script("maria-down.sh", base))
        self.others.append(int(run_script("maria-up.sh", base, str(port)).split()[-1]))
        seed_mysql(port)
        return f"mysql:{port}"

    def _start_server(self, mode: str, redis_port: int, db: str, sink_port: int) -> None:
        from macro import free_port

        port, log = free_port(), self.tmp / f"{mode}.log"
        with log.open("wb") as f:  # haven prints a traceback when it is terminated
            p = subprocess.Popen([sys.executable, str(SERVER), mode, str(port), str(redis_port), db,
                                  str(sink_port)], stdout=f, stderr=subprocess.STDOUT, env=self.env)
        self.logs[mode] = log
        self.procs.append(p)
        self.ports[mode], self.pids[mode] = port, p.pid
        wait_listening(port, p, log)

    def hub_lag(self, mode: str) -> tuple[int, int, float] | None:
        """The last totals the server's watch_hub() printed: (times over 10 ms, over
        50 ms, the longest in ms); None without them."""
        lines = [line.split() for line in self.logs[mode].read_text(errors="replace").splitlines()
                 if line.startswith("hub-lag ")]
        return (int(lines[-1][1]), int(lines[-1][2]), float(lines[-1][3])) if lines else None

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
                print(f"the {mode} server's log mentions callwatch:", *said[:10], sep="\n  ", file=sys.stderr)
        shutil.rmtree(self.tmp, ignore_errors=True)


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


class Sink:
    """A Graphite receiver that reads until the sender closes and keeps only the metric
    names (a thread of its own, so that it answers whatever the driver's hub is doing):
    what a server sent shows what its callwatch measured (nothing, for bare)."""

    def __init__(self) -> None:
        import socketserver
        import threading

        self.names: dict[str, int] = {}  # metric name -> lines received
        sink = self

        class Receive(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                for line in self.rfile:
                    name = line.split(b" ", 1)[0].decode(errors="replace")
                    sink.names[name] = sink.names.get(name, 0) + 1

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Receive)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, name="graphite-sink", daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def summary(self, mode: str) -> str:
        """One line: what callwatch sent, by kind of series (handler, watch, group, profile)."""
        kinds = {k: sum(1 for n in self.names if f".{k}." in n) for k in ("watch", "group", "profile")}
        handlers = sorted({n.split(".handler.", 1)[1].split(".", 1)[0] for n in self.names if ".handler." in n})
        return (f"the {mode} server sent {sum(self.names.values()):,} Graphite lines: {len(self.names)} series, "
                f"handlers {', '.join(handlers) or 'NONE'}; {kinds['watch']} watched-call, {kinds['group']} group "
                f"and {kinds['profile']} profile series")


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


def closed_loop(port: int, clients: int | list[Conn], seconds: float) -> tuple[int, float]:
    """``clients`` connections (a count: opened here and closed after; or open ones, left
    open) each sending its next request as soon as the last is answered, for ``seconds``;
    -> (answers, elapsed seconds)."""
    import gevent

    conns = clients if isinstance(clients, list) else [Conn(port) for _ in range(clients)]
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
    if not isinstance(clients, list):
        for c in conns:
            c.close()
    return done[0], elapsed


def turns(modes: tuple[str, ...], seconds: float, turn: float, rng: random.Random) -> Iterator[str]:
    """One round's turns: each mode ``seconds / turn`` times (at least once), the modes'
    order shuffled per turn, so that none always runs first or right after the same
    other one, and the machine's drift falls on every mode alike."""
    order = list(modes)
    for _ in range(max(1, round(seconds / turn))):
        rng.shuffle(order)
        yield from order
