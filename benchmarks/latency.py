"""Tail latency under open-loop load, bare and with callwatch at its defaults, in one run.

    python benchmarks/latency.py [--seconds 5] [--rounds 10] [--load 0.5] [--db sqlite]

The server (benchmarks/_cmdserver.py) is a gevent command server (haven ``GHaven``): its
table view makes 8 redis round trips and 8 queries (sqlite in the server, as
benchmarks/macro.py's handler; ``--db mysql``: MariaDB over loopback), its login one of
each; requests alternate between the two.  Two servers run side by side, identical
except for callwatch:

  bare        no callwatch
  callwatch   configured at its defaults (profiling on at its defaults; flush interval
              1 s), every route a handler, the four data functions watched
  (--noprof)  callwatch-noprof: the same without profiling, a third server

First the capacity of the bare server is measured (closed loop, in this run); then the
requests are sent open loop at ``--load`` x that rate: request i is due at start + i /
rate and is sent then whatever happened to the earlier ones (a pool of connections; a
request that finds none free waits for one, and that wait is part of its latency).
Latency is measured from the *due* time to the answer, so a stall delays every request
due during it (no coordinated omission).  In each round the servers take turns of ``--turn``
seconds, in an order shuffled per turn, until each had ``--seconds`` (short turns: the
machine's hiccups then fall on every server alike); a mode's percentiles are over all its
requests of all rounds.

Target: p99 at defaults within +5 % of bare's.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from statistics import median
from typing import NamedTuple

from _servers import Conn, Servers, closed_loop, header, mix, turns

CONNECTIONS = 64  # open, per server: far more than are busy at half the capacity
QUANTILES = (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999))


def percentile(sorted_xs: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least q of them at or below it."""
    return sorted_xs[max(0, math.ceil(q * len(sorted_xs)) - 1)]


class Round(NamedTuple):
    latencies: list[float]  # seconds, from each answered request's due time to its answer
    late: list[float]  # seconds, from due time to the start of its send: this client's own lag
    missing: int  # failed, or not answered in time


def open_loop(port: int, rate: float, seconds: float, conns: list[Conn]) -> Round:
    """Send int(rate * seconds) requests, request i due at start + i / rate."""
    import gevent
    import gevent.pool
    import gevent.queue

    free: gevent.queue.Queue[Conn] = gevent.queue.Queue()
    for c in conns:
        free.put(c)
    latencies: list[float] = []
    late: list[float] = []
    failed = [0]

    def one(i: int, due: float) -> None:
        late.append(time.perf_counter() - due)
        conn = free.get()
        try:
            conn.call(mix(i))
            latencies.append(time.perf_counter() - due)
        except (OSError, ValueError):  # counted as not answered; the connection is replaced
            failed[0] += 1
            conn.close()
            conn = Conn(port)
        finally:
            free.put(conn)
    n = int(rate * seconds)
    jobs = gevent.pool.Group()
    start = time.perf_counter() + 0.01
    for i in range(n):
        due = start + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            gevent.sleep(wait)
        jobs.spawn(one, i, due)
    jobs.join(timeout=30)  # a server that stopped answering ends the round, reported as missing
    missing = len(jobs)
    jobs.kill(block=True, timeout=5)
    return Round(latencies, late, missing + failed[0])


def capacity(port: int, seconds: float) -> float:
    """Requests/s of a closed loop of 32 connections: the median of three bursts, so that
    one burst during a pause of a noisy machine does not set the rate."""
    rates = []
    for _ in range(3):
        n, elapsed = closed_loop(port, 32, seconds / 3)
        rates.append(n / elapsed)
    return median(rates)


def measure(servers: Servers, args: argparse.Namespace) -> tuple[float, dict[str, list[Round]]]:
    """-> (the rate sent, per mode its rounds)."""
    rate = args.load * capacity(servers.ports["bare"], args.capacity_seconds)
    modes = servers.modes
    conns = {m: [Conn(servers.ports[m]) for _ in range(CONNECTIONS)] for m in modes}
    rounds: dict[str, list[Round]] = {m: [] for m in modes}
    for m in modes:  # warm up at the same rate: connections, caches, first profiles
        open_loop(servers.ports[m], rate, min(1.0, args.seconds), conns[m])
    rng = random.Random(1)
    for _ in range(args.rounds):
        parts: dict[str, list[Round]] = {m: [] for m in modes}
        for m in turns(modes, args.seconds, args.turn, rng):
            parts[m].append(open_loop(servers.ports[m], rate, args.turn, conns[m]))
        for m, ts in parts.items():
            rounds[m].append(Round([x for t in ts for x in t.latencies], [x for t in ts for x in t.late],
                                   sum(t.missing for t in ts)))
    for cs in conns.values():
        for c in cs:
            c.close()
    return rate, rounds


def report(rate: float, rounds: dict[str, list[Round]], servers: Servers, args: argparse.Namespace) -> None:
    print(header(f"gevent command server (haven GHaven), database {args.db}; open loop at {rate:,.0f} "
                 f"requests/s ({args.load:g} x the bare server's closed-loop capacity measured first); "
                 f"{args.rounds} rounds x {args.seconds:g} s per server in turns of {args.turn:g} s; {servers.pinned}"))
    print("Latency from each request's due time to its answer, ms; percentiles over all rounds; "
          "ratio: to bare's same percentile.")
    lat = {m: sorted(x for r in rs for x in r.latencies) for m, rs in rounds.items()}
    pct = {m: {name: 1e3 * percentile(xs, q) for name, q in QUANTILES} for m, xs in lat.items()}
    print("| server | requests | " + " | ".join(name for name, _ in QUANTILES) + " | "
          + " | ".join(f"{name} ratio" for name, _ in QUANTILES) + " |")
    print("|---|---:|" + "---:|" * (2 * len(QUANTILES)))
    for m in servers.modes:
        vals = " | ".join(f"{pct[m][name]:.2f}" for name, _ in QUANTILES)
        ratios = " | ".join(f"{pct[m][name] / pct['bare'][name]:.2f}x" for name, _ in QUANTILES)
        print(f"| {m} | {len(lat[m]):,} | {vals} | {ratios} |")
    per_round = [100 * (percentile(sorted(c.latencies), 0.99) / percentile(sorted(b.latencies), 0.99) - 1)
                 for c, b in zip(rounds["callwatch"], rounds["bare"])]
    late = sorted(x for rs in rounds.values() for r in rs for x in r.late)
    print(f"this client started its sends late by p99 {1e3 * percentile(late, 0.99):.2f} ms, max "
          f"{1e3 * late[-1]:.2f} ms (part of every row's latencies)")
    missing = sum(r.missing for rs in rounds.values() for r in rs)
    print(f"callwatch's p99 vs bare's, per round: {', '.join(f'{x:+.0f}' for x in per_round)} % (median "
          f"{median(per_round):+.1f} %): their spread shows this run's noise")
    if missing:
        print(f"{missing} requests failed or were not answered within 30 s of their round's end (not in the table)")
    if min(map(len, lat.values())) < 1000:
        print("fewer than 1,000 requests per server: p99.9 is their maximum (raise --seconds or --rounds)")
    for m in servers.modes[1:]:
        print(servers.sinks[m].summary(m))
    p99 = 100 * (pct["callwatch"]["p99"] / pct["bare"]["p99"] - 1)
    p999 = 100 * (pct["callwatch"]["p99.9"] / pct["bare"]["p99.9"] - 1)
    print(f"callwatch at defaults: p99 {p99:+.1f} % vs bare ({'meets' if p99 <= 5 else 'misses'} the +5 % "
          f"target); p99.9 pays {p999:+.1f} %")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0, help="per server per round")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--turn", type=float, default=0.5, help="seconds per turn of a server within a round")
    ap.add_argument("--load", type=float, default=0.5, help="fraction of the measured capacity to send")
    ap.add_argument("--capacity-seconds", type=float, default=3.0, help="closed-loop measurement of capacity")
    ap.add_argument("--db", choices=["sqlite", "mysql"], default="sqlite")
    ap.add_argument("--noprof", action="store_true", help="a third row: callwatch without profiling")
    ap.add_argument("--hub-lag", action="store_true",
                    help="each server also measures how long its gevent hub is held (a greenlet waking each ms)")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or args.turn <= 0 or not 0 < args.load < 1 or args.capacity_seconds <= 0:
        ap.error("--rounds, --seconds, --turn and --capacity-seconds must be positive, --load between 0 and 1")
    modes = ("bare", "callwatch", "callwatch-noprof") if args.noprof else ("bare", "callwatch")
    with Servers(args.db, modes, hub_lag=args.hub_lag) as servers:
        rate, rounds = measure(servers, args)
        lags = {m: servers.hub_lag(m) for m in modes}
    report(rate, rounds, servers, args)
    for m, lag in lags.items():
        if lag is not None:
            print(f"{m}: gevent hub held > 10 ms {lag[0]:,} times, > 50 ms {lag[1]:,} times, longest {lag[2]:.1f} ms "
                  "(whole run, warm-up and other servers' turns included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
