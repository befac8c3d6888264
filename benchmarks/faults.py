"""Request latency with Graphite broken, against Graphite healthy, in one run.

    python benchmarks/faults.py [--seconds 8]

Three runs of the same load (one thread making requests with 3 watched calls each, flush
every second): carbon healthy (a local receiver that reads everything), a peer that
accepts connections but never reads, and an address where nothing answers (a listener
whose backlog is full, so connects hang until the timeout).  Prints p50/p99/max request
latency, the flush thread's send errors, and the buffer: it must stay within
max_buffered_points, and points_dropped must equal what did not fit.
"""

from __future__ import annotations

import argparse
import socket
import socketserver
import sys
import threading
import time
from typing import Any, Callable

import callwatch


class _Reader(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while self.request.recv(65536):
            pass


def healthy() -> tuple[int, Callable[[], None]]:
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Reader)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()

    def stop() -> None:
        srv.shutdown()
        srv.server_close()
    return srv.server_address[1], stop


def never_reads() -> tuple[int, Callable[[], None]]:
    conns: list[socket.socket] = []
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1024)

    def accept() -> None:
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            conns.append(c)  # held open, never read
    threading.Thread(target=accept, daemon=True).start()

    def stop() -> None:
        s.close()
        for c in conns:
            c.close()
    return s.getsockname()[1], stop


def nothing_answers() -> tuple[int, Callable[[], None]]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)  # never accepted: once the backlog is full, connects hang
    fillers = []
    for _ in range(8):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(("127.0.0.1", s.getsockname()[1]))
        except BlockingIOError:
            pass
        fillers.append(f)

    def stop() -> None:
        for f in fillers:
            f.close()
        s.close()
    return s.getsockname()[1], stop


@callwatch.watch(name="db_get", group="db")
def db_get(i: int) -> int:
    return sum(range(50 + i))


@callwatch.handler("req")
def req(i: int) -> int:
    return db_get(i) + db_get(1) + db_get(2)


def run(name: str, make: Callable[[], tuple[int, Callable[[], None]]], seconds: float,
        max_points: int) -> dict[str, Any]:
    port, stop = make()
    rt = callwatch.configure({"graphite": {"host": "127.0.0.1", "port": port, "interval": 1, "timeout": 0.5,
                                           "max_buffered_points": max_points},
                              "naming": {"worker": "none"}, "spikes": {"enabled": False}}, strict=True)
    assert rt is not None
    lat: list[float] = []
    buffered_max = 0
    end = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < end:
        for _ in range(100):
            t = time.perf_counter_ns()
            req(i)
            lat.append(time.perf_counter_ns() - t)
            i += 1
        buffered_max = max(buffered_max, rt.exporter.buffered)
        time.sleep(0.001)
    stats = rt.exporter.stats
    result = {"name": name, "requests": len(lat), "send_errors": stats.send_errors,
              "points_dropped": stats.points_dropped, "buffered_max": buffered_max,
              "accounted": stats.points_made == stats.points_sent + stats.points_dropped + rt.exporter.buffered}
    callwatch.shutdown(timeout=2)
    stop()
    lat.sort()
    result.update(p50=lat[len(lat) // 2] / 1000, p99=lat[int(len(lat) * 0.99)] / 1000, max=lat[-1] / 1000)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--max-buffered-points", type=int, default=200)
    args = ap.parse_args(argv)
    rows = [run(n, f, args.seconds, args.max_buffered_points)
            for n, f in (("carbon healthy", healthy), ("peer never reads", never_reads),
                         ("nothing answers", nothing_answers))]
    base = rows[0]["p99"]
    print(f"Python {sys.version.split()[0]}, {args.seconds:g} s per run, flush every 1 s, timeout 0.5 s, "
          f"max_buffered_points {args.max_buffered_points}")
    print("| Graphite | requests | p50 us | p99 us | p99 x healthy | max us | send errors | buffered max | dropped |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    ok = True
    for r in rows:
        print(f"| {r['name']} | {r['requests']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['p99'] / base:.2f} | "
              f"{r['max']:.0f} | {r['send_errors']} | {r['buffered_max']} | {r['points_dropped']} |")
        ok &= r["buffered_max"] <= args.max_buffered_points and r["accounted"]
    print("buffer stayed within max_buffered_points; every point made was sent, dropped (and counted) or is "
          "still buffered" if ok else "BUFFER EXCEEDED ITS BOUND, or points unaccounted for")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
