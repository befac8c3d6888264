"""Soak: a million requests through the whole pipeline, memory sampled as it goes.

    python benchmarks/soak.py [--requests 1000000]

Ten handlers, each making watched calls (two of them grouped), a dimension with five
values, the real flush thread every second formatting every point into graphyte lines
(sent to a sender that drops the bytes, so the network is not what is measured).  RSS is
read from /proc every 100 000 requests; after the first 200 000 (warm-up) it must stay
within 5 MB.  Prints the figures and exits 1 if memory grew.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import callwatch
from callwatch.export import GraphyteSender


class NullSender(GraphyteSender):
    def __init__(self) -> None:
        super().__init__("null.invalid", 2003)
        self.bytes = 0

    def send_message(self, message: bytes) -> None:
        self.bytes += len(message)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource

    return pages * resource.getpagesize() / 1e6


@callwatch.watch(name="get_user", group="db")
def get_user(uid: int) -> int:
    return uid


@callwatch.watch(name="get_player", group="db")
def get_player(uid: int) -> int:
    return get_user(uid)


@callwatch.watch(name="cache_get")
def cache_get(key: str) -> None:
    return None


def make(name: str, calls: int):  # type: ignore[no-untyped-def]
    @callwatch.handler(name)
    def handler(i: int) -> None:
        callwatch.dimension("players", i % 5)
        for k in range(calls):
            get_player(k)
        cache_get("k")
    return handler


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    sender = NullSender()
    rt = callwatch.configure({"graphite": {"host": "null.invalid", "interval": 1}, "naming": {"worker": "none"}},
                             sender=sender, strict=True)
    assert rt is not None
    handlers = [make(f"handler{n}", n % 4) for n in range(10)]
    samples = []
    t0 = time.perf_counter()
    for i in range(args.requests):
        handlers[i % 10](i)
        if (i + 1) % 100_000 == 0:
            gc.collect()
            samples.append((i + 1, rss_mb(), time.perf_counter() - t0))
    callwatch.shutdown()
    print(f"Python {sys.version.split()[0]}: {args.requests} requests in {time.perf_counter() - t0:.1f} s, "
          f"{rt.exporter.stats.flushes} flushes, {rt.exporter.stats.points_sent} points "
          f"({sender.bytes / 1e6:.1f} MB of lines)")
    print("| requests | RSS MB | seconds |")
    print("|---------:|-------:|--------:|")
    for n, mb, sec in samples:
        print(f"| {n:>8} | {mb:>6.1f} | {sec:>7.1f} |")
    warm = [mb for n, mb, _ in samples if n >= 200_000]
    growth = max(warm) - min(warm) if warm else 0.0
    print(f"RSS after warm-up (200 000 requests): {min(warm):.1f} to {max(warm):.1f} MB, "
          f"growth {growth:.1f} MB ({'flat' if growth <= 5 else 'GROWING'})")
    return 0 if growth <= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
