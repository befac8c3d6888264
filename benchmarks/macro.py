"""Throughput of a realistic handler, bare and under each kind of instrumentation, in one run.

    python benchmarks/macro.py [--seconds 2] [--rounds 3] [--players 7]

The handler reads a session and each player's profile from a real redis-server over
loopback (started here, on a free port) and the table and each player from sqlite: with 7
players, 8 redis round trips and 8 SQL queries per request.  Rows (requests per second,
one thread; R rounds, each measuring every row once, right after each other):

  bare                      no instrumentation
  bare again                the same, a second time: the A/A row (what no difference measures as)
  callwatch defaults        @handler, the four data functions watched (db and redis groups),
                            sampled profiling at its defaults (profile: {}), flush thread running
  callwatch, profiling off  the same without sampled profiling
  callwatch @handler only   only the handler wrapper (no watched functions, no profiling)
  with --memory:
  callwatch defaults, memory on   the defaults row with ``memory: {}``'s gc hook (the gauges
                            are read on the flush thread, which every row shares)
  with --alternatives:
  prometheus                a Histogram (handler) and a labelled Histogram per data function
  statsd                    a statsd timer per handler and per data function, UDP per call
  cProfile per request      the classic decorator: a cProfile.Profile around every request
  yappi per request         yappi started and stopped around every request

Target: callwatch at defaults costs at most 1 % of throughput.

Beside the throughput, each row's CPU time per request (this thread's, user and system,
around the same blocks): it leaves out the waits on redis and the time the VM takes the CPU
away, so it moves less from round to round than the rate does; a server that is CPU-bound
loses that share of its capacity.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import callwatch
from callwatch import _request
from callwatch.profiling import _policy


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def quartiles(sorted_xs: list[float]) -> str:
    """The first and third quartiles (nearest rank), as "a .. b %"."""
    n = len(sorted_xs)
    return f"{sorted_xs[n // 4]:+.1f} .. {sorted_xs[(3 * n) // 4]:+.1f} %"


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


class RowClock:
    """The profiler's budget clock (``_policy.BUDGET_CLOCK``, the process's CPU time),
    advancing only while the row with profiling on runs: the budget then sees what it
    would in a server running only that handler.  With the process's whole CPU time, the
    other rows' time would be credit for that row, and it would profile more than its
    budget allows."""

    def __init__(self) -> None:
        self.total = 0.0
        self.since: float | None = None

    def __call__(self) -> float:
        since = self.since
        return self.total + (time.process_time() - since if since is not None else 0.0)

    def start(self) -> None:
        self.since = time.process_time()

    def stop(self) -> None:
        if self.since is not None:
            self.total += time.process_time() - self.since
            self.since = None


BUDGET_CLOCK = RowClock()
_policy.BUDGET_CLOCK = BUDGET_CLOCK


Rows = dict[str, tuple[Callable[[App], int], Callable[[], None], Callable[[], None]]]


def variants(redis_port: int, alternatives: bool, memory: bool = False) -> Rows:
    """name -> (handler, set up, tear down)"""
    nothing = lambda: None  # noqa: E731
    out: Rows = {}
    out["bare"] = (make_handler(plain), nothing, nothing)
    # The A/A row: bare again (a handler of its own, the same code).  Its "cost" is what
    # the measurement itself makes of no difference; a row is resolved only clear of it.
    out["bare again"] = (make_handler(plain), nothing, nothing)

    cw = callwatch.handler("table_view")(make_handler(lambda fn, n, g: callwatch.watch(name=n, group=g)(fn)))

    # callwatch stays configured for the whole run (main() does it), as in a server: the
    # flush thread and the profiler's budget control run all along; the other rows' code
    # simply does not go through callwatch's wrappers.  The budget's clock runs only in
    # this row's turns (``RowClock``).
    out["callwatch defaults"] = (cw, BUDGET_CLOCK.start, BUDGET_CLOCK.stop)

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
    if memory:
        from callwatch import _core
        from callwatch.memory import GcMeter

        # The hook is the process's: on only during this row's turns (it would count the
        # other rows' collections too, and they would pay for it).
        meter = GcMeter(_core.registry, _core.collector)

        def memory_on() -> None:
            meter.install()
            BUDGET_CLOCK.start()

        def memory_off() -> None:
            BUDGET_CLOCK.stop()
            meter.uninstall()
        out["callwatch defaults, memory on"] = (cw, memory_on, memory_off)
    if alternatives:
        out.update(alternative_rows(nothing))
    return out


def alternative_rows(nothing: Callable[[], None]) -> Rows:
    out: Rows = {}
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


#: Requests per block: rows take turns request by request, so that the machine's drift
#: (a shared VM's speed moves by tens of % from second to second: "noise" in the output)
#: hits every row alike; with turns of whole seconds it swamped a 1 % difference.
BLOCK = 1


def measure(app: App, rows: Rows, args: argparse.Namespace,
            cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """-> row -> its rate (requests/s) in each round; with ``cpu``, also each row's CPU
    time per request (µs, this thread's: user and system) in each round, into ``cpu``.

    A round lasts about ``seconds`` x the number of rows; in it the rows take turns in
    blocks of ``BLOCK`` requests, in an order shuffled per turn (no row always follows
    the same one), and a row's rate is its requests over the time its blocks took.
    """
    rng = random.Random(1)
    block = args.block
    order = list(rows)
    rates: dict[str, list[float]] = {name: [] for name in rows}
    for name in rows if cpu is not None else ():
        cpu[name] = []
    for _ in range(args.rounds):
        spent = dict.fromkeys(rows, 0)
        done = dict.fromkeys(rows, 0)
        used = dict.fromkeys(rows, 0)
        end = time.perf_counter() + args.seconds * len(rows)
        while time.perf_counter() < end:
            rng.shuffle(order)
            for name in order:
                handler, setup, teardown = rows[name]
                setup()
                try:
                    c, t = time.thread_time_ns(), time.perf_counter_ns()
                    for _ in range(block):
                        handler(app)
                    spent[name] += time.perf_counter_ns() - t
                    used[name] += time.thread_time_ns() - c
                    done[name] += block
                finally:
                    teardown()
        for name in rows:
            rates[name].append(done[name] / (spent[name] / 1e9))
            if cpu is not None:
                cpu[name].append(used[name] / done[name] / 1e3)
    return rates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="per row per round")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--players", type=int, default=7)
    ap.add_argument("--block", type=int, default=BLOCK, help="requests per turn")
    ap.add_argument("--memory", action="store_true", help="also the defaults with memory's gc hook")
    ap.add_argument("--alternatives", action="store_true",
                    help="also prometheus, statsd, and cProfile and yappi around every request")
    args = ap.parse_args(argv)
    server, port = start_redis()
    pinned = pin(server.pid)
    callwatch.configure({"naming": {"worker": "none"}, "graphite": {"interval": 1},
                         "profile": {}}, strict=True)
    try:
        app = App(port, args.players)
        rows = variants(port, args.alternatives, args.memory)
        cpu: dict[str, list[float]] = {}
        rates = measure(app, rows, args, cpu)
    finally:
        callwatch.shutdown()
        server.terminate()
        server.wait()

    costs = {name: sorted(100 * (1 - r / b) for r, b in zip(rs, rates["bare"])) for name, rs in rates.items()}
    drift = [100 * (a / b - 1) for a, b in zip(rates["bare"][1:], rates["bare"][:-1])]
    print(f"Python {sys.version.split()[0]}, {args.players} players: {args.players + 1} redis round trips and "
          f"{args.players + 1} SQL queries per request; {args.rounds} rounds of ~{args.seconds * len(rows):g} s, "
          f"rows taking turns in blocks of {args.block} requests; {pinned}")
    cpu_costs = {name: sorted(100 * (u / b - 1) for u, b in zip(us, cpu["bare"])) for name, us in cpu.items()}
    print("| row | requests/s (median) | cost vs bare (median of per-round ratios) | spread (middle half of rounds) "
          "| CPU µs/request (median) | CPU cost vs bare | its spread |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rs in rates.items():
        c, cc = costs[name], cpu_costs[name]
        print(f"| {name} | {median(rs):,.0f} | {median(c):+.1f} % | {quartiles(c)} | {median(cpu[name]):,.0f} "
              f"| {median(cc):+.1f} % | {quartiles(cc)} |")
    print(f"noise: bare's rate moved by up to {max((abs(x) for x in drift), default=0.0):.1f} % between rounds")
    cost = median(costs["callwatch defaults"])
    print(f"callwatch at defaults costs {cost:.2f} % of throughput ({'meets' if cost <= 1 else 'MISSES'} the 1 % "
          "target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
