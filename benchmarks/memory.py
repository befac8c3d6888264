"""What ``memory:`` costs: the gc hook per collection, the gauges per flush, the census.

    python benchmarks/memory.py [--rounds 15]

Rows, interleaved round by round (the median of the rounds is shown, with the spread):

  collection, hook off / on    gc.collect(0) of a young generation of 700 fresh lists (the
                               default threshold), without and with callwatch's hook, in a
                               request; the difference is the hook's cost per collection
  allocations, hook off / on   100 000 lists made and dropped (the collector runs by itself
                               every 700): what a program that allocates pays per list (the
                               fastest of 5 runs per round: this VM's noise is larger than it)
  read_memory()                the gauges (/proc/self/statm each flush; smaps_rollup, for
                               USS and PSS, at most once a minute), on this process, then
                               with 1 000 000 more objects on the heap
  census                       the object census (count_types), the same two ways
  tracemalloc                  allocating while a leak hunt runs tracemalloc

The macro benchmark's "memory on" row (``python benchmarks/macro.py --memory``) measures
the hook within a realistic handler.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from typing import Any, Callable

import callwatch
from callwatch import _core
from callwatch.memory import CENSUS_CHUNK, GcMeter, count_types, read_memory


def young(n: int = 700) -> list[Any]:
    return [[] for _ in range(n)]


def collection() -> int:
    keep = young()
    t = time.perf_counter_ns()
    gc.collect(0)
    dt = time.perf_counter_ns() - t
    del keep
    return dt


def allocations() -> int:
    t = time.perf_counter_ns()
    for _ in range(100_000):
        [].append(None)  # noqa: PERF401 - a container made and dropped, nothing else
        x: list[Any] = [[]]
        del x
    return time.perf_counter_ns() - t


def spread(xs: list[float]) -> str:
    s = sorted(xs)
    return f"{s[0]:,.1f} .. {s[-1]:,.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args(argv)
    callwatch.configure({"naming": {"worker": "none"}}, start_thread=False, strict=True)
    meter = GcMeter(_core.registry, _core.collector)
    rows: dict[str, list[float]] = {k: [] for k in ("collection, hook off", "collection, hook on",
                                                    "allocations, hook off", "allocations, hook on")}
    try:
        with callwatch.request("bench"):
            for _ in range(args.rounds):
                # Collections: on and off alternate collection by collection (the machine's
                # drift falls on both alike), 200 of each per round.
                times: dict[bool, list[int]] = {False: [], True: []}
                for i in range(400):
                    on = bool(i % 2) if (i // 2) % 2 else not i % 2
                    if on:
                        meter.install()
                    try:
                        times[on].append(collection())
                    finally:
                        meter.uninstall()
                for on in (False, True):
                    name = "on" if on else "off"
                    rows[f"collection, hook {name}"].append(statistics.median(times[on]))
                    if on:
                        meter.install()
                    try:
                        rows[f"allocations, hook {name}"].append(min(allocations() for _ in range(5)) / 100_000)
                    finally:
                        meter.uninstall()
                _core.collector.fold()
    finally:
        callwatch.shutdown()
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"Python {sys.version.split()[0]}, {args.rounds} rounds (median, [min .. max] of the rounds)")
    print("| row | ns | spread |")
    print("|---|---:|---:|")
    for k, v in rows.items():
        print(f"| {k} | {med[k]:,.1f} | {spread(v)} |")
    per = [on - off for on, off in zip(rows["collection, hook on"], rows["collection, hook off"])]
    print(f"the hook adds {statistics.median(per):,.0f} ns per collection (median of per-round differences, "
          f"{spread(per)}); a collection of 700 young lists takes {med['collection, hook off']:,.0f} ns")
    alloc = [on / off - 1 for on, off in zip(rows["allocations, hook on"], rows["allocations, hook off"])]
    print(f"allocating: {100 * statistics.median(alloc):+.2f} % per list with the hook "
          f"(median of per-round ratios, {100 * min(alloc):+.2f} .. {100 * max(alloc):+.2f} %)")
    # A leak hunt runs tracemalloc (``_leakhunt.FRAMES`` frames per allocation) while it lasts.
    import tracemalloc

    from callwatch._leakhunt import FRAMES

    ratios = []
    for _ in range(args.rounds):
        off = min(allocations() for _ in range(3))
        tracemalloc.start(FRAMES)
        try:
            on = min(allocations() for _ in range(3))
        finally:
            tracemalloc.stop()
        ratios.append(on / off)
    print(f"allocating under tracemalloc ({FRAMES} frames, while a leak hunt runs): "
          f"{statistics.median(ratios):.2f} x the time per list (median of {args.rounds} rounds, "
          f"{min(ratios):.2f} .. {max(ratios):.2f})")
    for label, extra in (("this process", 0), ("with 1 000 000 more objects", 1_000_000)):
        heap = [[] for _ in range(extra)]
        for rollup in (False, True):
            times = []
            for _ in range(50):
                t = time.perf_counter_ns()
                got = read_memory(rollup)
                times.append(time.perf_counter_ns() - t)
            what = "with smaps_rollup" if rollup else "statm only"
            print(f"read_memory(), {what}, {label} (RSS {got.get('rss_mb', 0):,.0f} MB): "
                  f"{statistics.median(times) / 1000:,.1f} µs (median of 50)")
        census, listing = [], []
        for _ in range(5):
            t = time.perf_counter_ns()
            n = len(gc.get_objects())
            listing.append(time.perf_counter_ns() - t)
            t = time.perf_counter_ns()
            count_types()
            census.append(time.perf_counter_ns() - t)
        print(f"census, {label} ({n:,} objects tracked): {statistics.median(census) / 1e6:,.1f} ms in all "
              f"(median of 5), of which gc.get_objects() holds the interpreter {statistics.median(listing) / 1e6:,.1f}"
              f" ms in one piece; the counting yields every {CENSUS_CHUNK:,} objects")
        del heap
    return 0


if __name__ == "__main__":
    sys.exit(main())
