"""Throughput of a gevent command server, bare and with callwatch at its defaults, in one run.

    python benchmarks/macro_gevent.py [--seconds 3] [--rounds 9] [--clients 32] [--db mysql]

The server (benchmarks/_cmdserver.py) is a haven ``GHaven`` dispatching by command id,
shaped like the seed's servers: its table view makes 8 redis round trips and 8 database
queries, its login one of each, over loopback; the client sends both in turn.  Three
servers run side by side, identical except for callwatch:

  bare              no callwatch
  callwatch         configured at its defaults (profiling on at its defaults; flush
                    interval 1 s), every route a handler (integrations.maple.instrument),
                    the four data functions watched in groups redis and db
  callwatch-noprof  the same without profiling: what profiling costs is the difference
  bare-again        bare again, in a process of its own: the A/A row.  Its "cost" is what two
                    identical servers differ by in this run (noise, and each process's own
                    layout); a row's cost is resolved only where it stands clear of this one

Each round drives each server for ``--seconds``, in turns of ``--turn`` seconds taken in
an order shuffled per turn, closed loop: ``--clients`` connections per server (kept open),
each sending its next command when the last is answered.  A row's cost is
the median over rounds of (1 - its rate / bare's rate in the same round).  The
servers are pinned to one CPU, redis, MariaDB and this client to the other; "server CPU"
says how busy a server's CPU was (near 100 %: the server, not the client or the data
stores, is what limits throughput, so its cost shows).

Target: callwatch at defaults costs at most 1 % of throughput.
"""

from __future__ import annotations

import argparse
import random
import sys
from statistics import median

from _servers import Conn, Servers, closed_loop, cpu_seconds, header, turns


MODES = ("bare", "callwatch", "callwatch-noprof", "bare-again")
Rounds = dict[str, dict[str, list[float]]]  # mode -> {"rate", "cpu", "us", "other"} -> one value per round


def measure(servers: Servers, args: argparse.Namespace) -> Rounds:
    """Per mode and round: requests/s, the server's CPU use, its CPU µs per request, and
    the CPU use of everything on the other CPU (redis, MariaDB, this client).

    In a round the servers take turns of ``--turn`` seconds, in an order shuffled per
    turn, until each had ``--seconds``; a mode's figures are over all its turns of the
    round.  Short turns: the machine's drift (tens of % from second to second on a shared
    VM) then hits every server alike.
    """
    out: Rounds = {m: {"rate": [], "cpu": [], "us": [], "other": []} for m in MODES}
    conns = {m: [Conn(servers.ports[m]) for _ in range(args.clients)] for m in MODES}
    for mode in MODES:  # warm up: connections, caches, callwatch's first profiles
        closed_loop(servers.ports[mode], conns[mode], min(1.0, args.seconds))
    rng = random.Random(1)
    for _ in range(args.rounds):
        tot = {m: [0, 0.0, 0.0, 0.0] for m in MODES}  # answers, seconds, server CPU, other CPU
        for mode in turns(MODES, args.seconds, args.turn, rng):
            pid = servers.pids[mode]
            cpu, other = cpu_seconds(pid), sum(map(cpu_seconds, servers.others))
            n, elapsed = closed_loop(servers.ports[mode], conns[mode], args.turn)
            t = tot[mode]
            t[0] += n
            t[1] += elapsed
            t[2] += cpu_seconds(pid) - cpu
            t[3] += sum(map(cpu_seconds, servers.others)) - other
        for mode, (n, elapsed, cpu, other) in tot.items():
            row = out[mode]
            row["rate"].append(n / elapsed)
            row["cpu"].append(100 * cpu / elapsed)
            row["us"].append(1e6 * cpu / n)
            row["other"].append(100 * other / elapsed)
    for cs in conns.values():
        for c in cs:
            c.close()
    return out


def report(out: Rounds, servers: Servers, args: argparse.Namespace) -> float:
    bare = out["bare"]
    cost = {m: [100 * (1 - c / b) for c, b in zip(out[m]["rate"], bare["rate"])] for m in MODES}
    cpu_cost = {m: [100 * (c / b - 1) for c, b in zip(out[m]["us"], bare["us"])] for m in MODES}
    print(header(f"gevent command server (haven GHaven), database {args.db}; {args.clients} clients, closed "
                 f"loop; table view (8 redis round trips + 8 queries) and login (1 + 1) in turn; {args.rounds} "
                 f"rounds x {args.seconds:g} s per server in turns of {args.turn:g} s; {servers.pinned}"))
    print("Medians over rounds; costs: of per-round ratios to bare. server CPU: its CPU's busy share; "
          "other CPU: redis, database and client (near 100 %: they, not the server, limit the rate).")
    print("| server | requests/s | cost vs bare | server CPU | server CPU µs/request | CPU µs cost vs bare "
          "| other CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for m in MODES:
        row = out[m]
        c, u = (f"{median(cost[m]):+.1f} %", f"{median(cpu_cost[m]):+.1f} %") if m != "bare" else ("-", "-")
        print(f"| {m} | {median(row['rate']):,.0f} | {c} | {median(row['cpu']):.0f} % | {median(row['us']):,.0f} "
              f"| {u} | {median(row['other']):.0f} % |")
    moved = max((abs(100 * (a / b - 1)) for a, b in zip(bare["rate"][1:], bare["rate"][:-1])), default=0.0)
    for m in MODES[1:]:
        if m == "bare-again":
            print(f"{m} per round: {', '.join(f'{x:+.1f}' for x in cost[m])} % (spread "
                  f"{max(cost[m]) - min(cost[m]):.1f} points), median {median(cost[m]):+.1f} %: what identical servers "
                  "differ by")
            continue
        print(f"{m} per round: {', '.join(f'{x:+.1f}' for x in cost[m])} % (spread "
              f"{max(cost[m]) - min(cost[m]):.1f} points); {servers.sinks[m].summary(m)}")
    print(f"bare's rate moved by up to {moved:.1f} % between rounds")
    at_defaults = median(cost["callwatch"])
    print(f"callwatch at defaults costs {at_defaults:.2f} % of throughput "
          f"({'meets' if at_defaults <= 1 else 'misses'} the 1 % target)")
    return at_defaults


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="per server per round")
    ap.add_argument("--turn", type=float, default=0.25, help="seconds per turn of a server")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--clients", type=int, default=32, help="connections, each one request at a time")
    ap.add_argument("--db", choices=["mysql", "sqlite"], default="mysql",
                    help="MariaDB on loopback through PyMySQL, or sqlite in the server")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0 or args.turn <= 0 or args.clients < 1:
        ap.error("--rounds, --seconds, --turn and --clients must be positive")
    with Servers(args.db, MODES) as servers:
        out = measure(servers, args)
    report(out, servers, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
