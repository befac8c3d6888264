"""What callwatch costs per request in instructions, counted by valgrind (callgrind): immune to load.

    python benchmarks/instructions.py [--requests 512] [--python PATH]

On a shared VM the throughput benchmarks (macro.py, features.py) move by several % from
round to round, more than the 1 % they judge; an instruction count does not move with the
neighbours' load.  The handler is benchmarks/macro.py's (7 players: 8 redis round trips
over loopback and 8 sqlite queries per request, redis-server started here).  Each row runs
in its own process under ``valgrind --tool=callgrind``, counting only inside the loop of
requests (``--toggle-collect=map_next``: the loop is ``map()``); a row's instructions per
request are the difference between a run of 2N and one of N requests, divided by N, so
start-up and warm-up cancel.  ``PYTHONHASHSEED=0``: with random string hashes the dicts'
collisions move a row by thousands of instructions from run to run.

  bare                   no instrumentation
  @handler               the handler wrapper only (its fold included: it runs in the loop)
  + watched, groups      the four data functions watched (16 calls per request) in the
                         groups redis and db
  + profiler (skipped)   profiling at its defaults (``profile: {}``), on the requests it
                         does not pick: what every unprofiled request pays.  The picked
                         ones cost the budget on top (``profile.budget``, 0.2 % of CPU at
                         defaults), which benchmarks/profiling.py checks.

What this does not count: the kernel's work (syscalls, the loopback), which the watched
calls wait on, and cache misses.  So its % is of the process's user-space instructions
only; a throughput cost is a smaller share of wall time when the request waits on I/O.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROWS = ("bare", "@handler", "+ watched, groups", "+ profiler (skipped)")


def child(row: str, n: int, port: int) -> None:
    """Run ``n`` requests of ``row``'s handler after a warm-up, the requests inside map()."""
    import callwatch
    import macro
    from callwatch import _request

    cfg: dict[str, object] = {"naming": {"worker": "none"}, "graphite": {"interval": 3600}}
    if row == ROWS[3]:
        cfg["profile"] = {}
    callwatch.configure(cfg, strict=True)
    if row == ROWS[3]:
        # never pick: the row is the path of the requests the profiler skips
        _request.profiler.policy.skip = 10 ** 12  # type: ignore[union-attr]
    app = macro.App(port, 7)
    if row == ROWS[0]:
        h = macro.make_handler(macro.plain)
    elif row == ROWS[1]:
        h = callwatch.handler("table_view_h")(macro.make_handler(macro.plain))
    else:
        h = callwatch.handler("table_view")(
            macro.make_handler(lambda fn, name, group: callwatch.watch(name=name, group=group)(fn)))
    for _ in range(200):
        h(app)
    list(map(h, itertools.repeat(app, n)))
    callwatch.shutdown()


def count(python: str, row: str, n: int, port: int, out_dir: str) -> int:
    """The instructions callgrind counted inside the loop of one run."""
    out = Path(out_dir) / f"cg.{ROWS.index(row)}.{n}.out"
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(["valgrind", "--tool=callgrind", "--toggle-collect=map_next", f"--callgrind-out-file={out}",
                    python, os.path.abspath(__file__), "--child", row, str(n), str(port)],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    m = re.search(r"^summary: (\d+)$", out.read_text(), re.M)
    if m is None:
        raise SystemExit(f"no summary line in {out}")
    return int(m.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=512, help="N: each row runs N and 2N requests")
    ap.add_argument("--python", default=sys.executable, help="the Python to measure (callwatch installed)")
    ap.add_argument("--child", nargs=3, metavar=("ROW", "N", "PORT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    if shutil.which("valgrind") is None:
        print("benchmarks/instructions.py needs valgrind: apt-get install valgrind", file=sys.stderr)
        return 2
    import macro

    server, port = macro.start_redis()
    n = args.requests
    try:
        with tempfile.TemporaryDirectory() as tmp, concurrent.futures.ThreadPoolExecutor(2) as pool:
            runs = {(row, k): pool.submit(count, args.python, row, k, port, tmp) for row in ROWS for k in (n, 2 * n)}
            per = {row: (runs[row, 2 * n].result() - runs[row, n].result()) / n for row in ROWS}
    finally:
        server.terminate()
        server.wait()
    version = subprocess.run([args.python, "-c", "import sys, callwatch._core as c; "
                              "print(sys.version.split()[0], 'C' if c.use_speedups else 'pure-Python')"],
                             capture_output=True, text=True).stdout.split()
    print(f"Python {' '.join(version[:1])}, watched wrapper: {' '.join(version[1:]) or '?'}; the macro handler "
          f"(8 redis round trips, 8 sqlite queries); {n} and {2 * n} requests per row, callgrind")
    print("| row | instructions per request | vs bare | step |")
    print("|---|---:|---:|---:|")
    bare = per[ROWS[0]]
    for i, row in enumerate(ROWS):
        step = per[row] - per[ROWS[i - 1]] if i else 0.0
        print(f"| {row} | {per[row]:,.0f} | {100 * (per[row] / bare - 1):+.2f} % | {step:+,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
