"""Throughput of a realistic handler, bare and under each kind of instrumentation, in one run.

    python benchmarks/macro.py [--seconds 2] [--rounds 3] [--players 7]

The handler reads a session and each player's profile from a real redis-server over
loopback (started here, on a free port) and the table and each player from sqlite: with 7
players, 8 redis round trips and 8 SQL queries per request.  Rows (requests per second,
one thread; R rounds, each measuring every row once, right after each other):

  bare                      no instrumentation
  callwatch defaults        @handler, the four data functions watched (db and redis groups),
                            sampled profiling at 1 % with the 2 % budget, flush thread running
  callwatch, profiling off  the same without sampled profiling
  callwatch @handler only   only the handler wrapper (no watched functions, no profiling)
  prometheus                a Histogram (handler) and a labelled Histogram per data function
  statsd                    a statsd timer per handler and per data function, UDP per call
  cProfile per request      the classic decorator: a cProfile.Profile around every request
  yappi per request         yappi started and stopped around every request

Target: callwatch at defaults costs at most 1 % of throughput.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import callwatch
from callwatch import _core, _request


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def pin(redis_pid: int) -> str:
    """Put redis-server and this process on different CPUs, when there are two: both
    then keep their caches, and the rows' rates move far less from round to round."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return "not pinned (one CPU)"
        os.sched_setaffinity(redis_pid, {cpus[-1]})
        os.sched_setaffinity(0, {cpus[0]})
        return f"this process on CPU {cpus[0]}, redis-server on CPU {cpus[-1]}"
    except (AttributeError, OSError) as e:
        return f"not pinned ({e})"


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", tempfile.mkdtemp()],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p, port
        except OSError:
            time.sleep(0.02)
    raise SystemExit("redis-server did not start")


class App:
    def __init__(self, redis_port: int, players: int) -> None:
        import redis

        self.r = redis.Redis(port=redis_port)
        self.db = sqlite3.connect(":memory:")
        self.db.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);"
                              "CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT, chips INT);")
        self.db.execute("INSERT INTO t VALUES (1, 'table')")
        for i in range(players):
            self.db.execute("INSERT INTO p VALUES (?, ?, 1000)", (i, f"p{i}"))
            self.r.set(f"profile:{i}", f"profile-{i}")
        self.r.set("session:1", "s")
        self.players = players


def get_session(app: App, uid: int) -> Any:
    return app.r.get(f"session:{uid}")


def get_profile(app: App, pid: int) -> Any:
    return app.r.get(f"profile:{pid}")


def load_table(app: App, tid: int) -> Any:
    return app.db.execute("SELECT id, name FROM t WHERE id = ?", (tid,)).fetchone()


def load_player(app: App, pid: int) -> Any:
    return app.db.execute("SELECT id, name, chips FROM p WHERE id = ?", (pid,)).fetchone()


def make_handler(wrap: Callable[[Callable[..., Any], str, str], Callable[..., Any]]) -> Callable[[App], int]:
    sess, prof = wrap(get_session, "get_session", "redis"), wrap(get_profile, "get_profile", "redis")
    table, player = wrap(load_table, "load_table", "db"), wrap(load_player, "load_player", "db")

    def table_view(app: App) -> int:
        sess(app, 1)
        table(app, 1)
        n = 0
        for pid in range(app.players):
            prof(app, pid)
            n += len(player(app, pid))
        return n
    return table_view


def plain(fn: Callable[..., Any], name: str, group: str) -> Callable[..., Any]:
    return fn


def variants(redis_port: int) -> dict[str, tuple[Callable[[App], int], Callable[[], None], Callable[[], None]]]:
    """name -> (handler, set up, tear down)"""
    nothing = lambda: None  # noqa: E731
    out: dict[str, tuple[Callable[[App], int], Callable[[], None], Callable[[], None]]] = {}
    out["bare"] = (make_handler(plain), nothing, nothing)

    cw = callwatch.handler("table_view")(make_handler(lambda fn, n, g: callwatch.watch(name=n, group=g)(fn)))

    # callwatch stays configured for the whole run (main() does it), as in a server: the
    # flush thread and the profiler's budget control run all along; the other rows' code
    # simply does not go through callwatch's wrappers.
    out["callwatch defaults"] = (cw, nothing, nothing)

    # The same, split up: without sampled profiling, and the handler wrapper alone.
    saved: list[Any] = []

    def profiling_off() -> None:
        saved.append(_request.profiler)
        _request.profiler = None

    def profiling_back() -> None:
        _request.profiler = saved.pop()
    out["callwatch, profiling off"] = (cw, profiling_off, profiling_back)
    out["callwatch @handler only"] = (callwatch.handler("table_view_h")(make_handler(plain)), profiling_off,
                                      profiling_back)

    from prometheus_client import CollectorRegistry, Histogram

    reg = CollectorRegistry()
    h_req = Histogram("request_seconds", "r", ["handler"], registry=reg)
    h_call = Histogram("call_seconds", "c", ["function"], registry=reg)
    inner = make_handler(lambda fn, n, g: h_call.labels(n).time()(fn))
    req_timer = h_req.labels("table_view")

    def prom(app: App) -> int:
        with req_timer.time():
            return inner(app)
    out["prometheus"] = (prom, nothing, nothing)

    import statsd

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    sd = statsd.StatsClient("127.0.0.1", rx.getsockname()[1])
    out["statsd"] = (sd.timer("table_view")(make_handler(lambda fn, n, g: sd.timer(n)(fn))), nothing, rx.close)

    import cProfile

    base = make_handler(plain)

    def cprof(app: App) -> int:
        p = cProfile.Profile()
        return p.runcall(base, app)  # type: ignore[no-any-return]
    out["cProfile per request"] = (cprof, nothing, nothing)

    import yappi

    def yap(app: App) -> int:
        yappi.start(builtins=True)
        try:
            return base(app)
        finally:
            yappi.stop()
            yappi.clear_stats()
    out["yappi per request"] = (yap, nothing, nothing)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--players", type=int, default=7)
    args = ap.parse_args(argv)
    server, port = start_redis()
    pinned = pin(server.pid)
    callwatch.configure({"naming": {"worker": "none"}, "graphite": {"interval": 1},
                         "profile": {"rate": 0.01, "budget": 0.02}}, strict=True)
    try:
        app = App(port, args.players)
        rows = variants(port)
        # Each round measures every row once, right after each other; a row's cost is the
        # median over rounds of (1 - its rate / bare's rate in the same round), which
        # cancels most of the drift of a shared 2-core machine.
        rates: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(args.rounds):
            for name, (handler, setup, teardown) in rows.items():
                setup()
                try:
                    n = 0
                    end = time.perf_counter() + args.seconds
                    t = time.perf_counter()
                    while time.perf_counter() < end:
                        handler(app)
                        n += 1
                    rates[name].append(n / (time.perf_counter() - t))
                finally:
                    teardown()
    finally:
        callwatch.shutdown()
        server.terminate()
        server.wait()

    cost = {name: 100 * median([1 - r / b for r, b in zip(rs, rates["bare"])]) for name, rs in rates.items()}
    spread = [100 * (a / b - 1) for a, b in zip(rates["bare"][1:], rates["bare"][:-1])]
    print(f"Python {sys.version.split()[0]}, {args.players} players: {args.players + 1} redis round trips and "
          f"{args.players + 1} SQL queries per request; {args.rounds} rounds x {args.seconds:g} s per row; {pinned}")
    print("| row | requests/s (median) | cost vs bare (median of per-round ratios) |")
    print("|---|---:|---:|")
    for name, rs in rates.items():
        print(f"| {name} | {median(rs):,.0f} | {cost[name]:+.1f} % |")
    print(f"noise: bare's rate moved by up to {max((abs(x) for x in spread), default=0.0):.1f} % between rounds")
    cost = cost["callwatch defaults"]  # type: ignore[assignment]
    print(f"callwatch at defaults costs {cost:.1f} % of throughput ({'meets' if cost <= 1 else 'MISSES'} the 1 % "
          "target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
