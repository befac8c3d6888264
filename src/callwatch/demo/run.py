"""Drive the card-game server with a table of 2 players, then 7, through the real pipeline.

The watched functions come from ``callwatch.yaml`` beside this file (resolved by dotted
path and glob, as in a user's config); the flush thread, the snapshot and, with
``--graphite``, the graphyte sender are the same ones a server uses.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import callwatch

from .. import config as cwconfig
from ..aggregate import BACKGROUND, Snapshot
from . import game

CONFIG = Path(__file__).with_name("callwatch.yaml")
PHASES = (2, 7)


@dataclass
class Totals:
    requests: int = 0
    ns: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    call_ns: dict[str, int] = field(default_factory=dict)


@dataclass
class Growth:
    handler: str
    function: str
    before: float  # calls per request with 2 players
    after: float  # with 7 players

    @property
    def ratio(self) -> float:
        return self.after / self.before if self.before else float("inf")


@dataclass
class DemoResult:
    phases: dict[int, dict[str, Totals]]
    growth: list[Growth]
    snapshots: int
    points_sent: int


def one_round(server: game.Server, players: int, table_id: int, first_uid: int) -> None:
    uids = range(first_uid, first_uid + players)
    for uid in uids:
        game.login(server, uid)
    for uid in uids:
        game.join_table(server, uid, table_id)
    game.deal(server, table_id)
    for _ in range(3):
        for uid in uids:
            game.play(server, uid, table_id)
    for uid in uids:
        game.leave(server, uid, table_id)


def _worker(n: int, stop_at: float, switch_at: float, pause: float) -> None:
    server = game.Server(seed=n)
    for uid in range(1, 100):
        server.db.add_user(n * 1000 + uid, f"player{uid}")
    server.db.add_table(n, f"table{n}")
    while True:
        now = time.time()
        if now >= stop_at:
            return
        players = PHASES[0] if now < switch_at else PHASES[1]
        one_round(server, players, n, n * 1000 + 1)
        time.sleep(pause)


def _print_snapshot(out: TextIO, snap: Snapshot, phase: str) -> None:
    start = time.strftime("%H:%M:%S", time.localtime(snap.start))
    end = time.strftime("%H:%M:%S", time.localtime(snap.end))
    out.write(f"\n== {start}-{end}  {phase}\n")
    out.write(f"   {'handler':<11} {'req':>6} {'p99 ms':>7}   {'watched call':<22} {'calls/req':>9} {'ms/req':>8}\n")
    for h, hs in sorted(snap.handlers.items()):
        if h == BACKGROUND or not hs.requests:
            continue
        rows = sorted(((snap.entries[k], fs) for k, fs in hs.funcs.items() if fs.calls),
                      key=lambda x: (x[0].is_group, x[0].name))
        first = True
        for e, fs in rows or [(None, None)]:
            head = (f"   {h:<11} {hs.requests:>6} {hs.quantile_ns(0.99) / 1e6:>7.3f}   " if first
                    else " " * 32)
            first = False
            if e is None or fs is None:
                out.write(head + "\n")
                continue
            label = f"[{e.name}]" if e.is_group else e.name
            out.write(f"{head}{label:<22} {fs.calls / hs.requests:>9.2f} {fs.ns / hs.requests / 1e6:>8.4f}\n")
    out.flush()


def run(duration: float = 30.0, interval: int = 5, graphite: tuple[str, int] | None = None,
        graphite_web: str | None = None, threads: int = 2, out: TextIO | None = None,
        pause: float = 0.002) -> DemoResult:
    import sys

    out = out or sys.stdout
    cfg = cwconfig.load(CONFIG)
    g = cfg.graphite
    g = cwconfig.GraphiteConfig(**{**g.__dict__, "interval": interval})
    if graphite is not None:
        g = cwconfig.GraphiteConfig(**{**g.__dict__, "host": graphite[0], "port": graphite[1]})
    cfg = cwconfig.Config(enabled=True, graphite=g, host=cfg.host, watch=cfg.watch,
                          handlers=cfg.handlers, source=cfg.source)

    t0 = time.time()
    switch_at = t0 + duration / 2
    stop_at = t0 + duration
    per_phase: dict[int, dict[str, Totals]] = {p: {} for p in PHASES}
    count = [0]
    lock = threading.Lock()

    def phase_of(snap: Snapshot) -> int | None:
        if snap.end <= switch_at:
            return PHASES[0]
        if snap.start >= switch_at:
            return PHASES[1]
        return None

    def sink(snap: Snapshot) -> None:
        p = phase_of(snap)
        label = f"table of {p} players" if p else "table grows from 2 to 7 players (mixed)"
        with lock:
            count[0] += 1
            _print_snapshot(out, snap, label)
            if p is None:
                return
            for h, hs in snap.handlers.items():
                if h == BACKGROUND or not hs.requests:
                    continue
                tot = per_phase[p].setdefault(h, Totals())
                tot.requests += hs.requests
                tot.ns += hs.ns
                for k, fs in hs.funcs.items():
                    name = snap.entries[k].name
                    if snap.entries[k].is_group:
                        name = f"[{name}]"
                    tot.calls[name] = tot.calls.get(name, 0) + fs.calls
                    tot.call_ns[name] = tot.call_ns.get(name, 0) + fs.ns

    out.write(f"callwatch demo: card-game server, {threads} threads, {duration:.0f} s "
              f"(table of {PHASES[0]} players, then {PHASES[1]}), flushing every {interval} s"
              + (f" to Graphite at {graphite[0]}:{graphite[1]}" if graphite else " in-process (no Graphite)")
              + "\n")
    rt = callwatch.configure(cfg, on_snapshot=sink, strict=True)
    assert rt is not None
    workers = [threading.Thread(target=_worker, args=(n + 1, stop_at, switch_at, pause), daemon=True)
               for n in range(threads)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        callwatch.shutdown()
    points = rt.exporter.stats.points_sent

    growth = _growth(per_phase)
    _print_summary(out, per_phase, growth)
    if graphite is not None:
        _print_graphite_hints(out, cfg, graphite, graphite_web, points, rt.exporter.buffered)
    return DemoResult(per_phase, growth, count[0], points)


def _growth(per_phase: dict[int, dict[str, Totals]]) -> list[Growth]:
    a, b = per_phase[PHASES[0]], per_phase[PHASES[1]]
    rows: list[Growth] = []
    for h in sorted(set(a) & set(b)):
        ta, tb = a[h], b[h]
        for fn in sorted(set(ta.calls) | set(tb.calls)):
            before = ta.calls.get(fn, 0) / ta.requests
            after = tb.calls.get(fn, 0) / tb.requests
            rows.append(Growth(h, fn, before, after))
    return rows


def _print_summary(out: TextIO, per_phase: dict[int, dict[str, Totals]], growth: list[Growth]) -> None:
    a, b = PHASES
    out.write(f"\n== What grew when the table went from {a} to {b} players (calls per request)\n")
    grown = sorted((g for g in growth if g.after > g.before * 1.2 + 1e-9), key=lambda g: -g.ratio)
    same = [g for g in growth if g not in grown]
    for g in grown:
        ratio = "new" if g.before == 0 else f"x{g.ratio:.2f}"
        out.write(f"   {g.handler:<11} {g.function:<22} {g.before:>6.2f} -> {g.after:>6.2f}  {ratio}\n")
    if not grown:
        out.write("   nothing grew (was the load too short to fill an interval per phase?)\n")
    flat = sorted({g.handler for g in same} - {g.handler for g in grown})
    if flat:
        out.write(f"   unchanged: {', '.join(flat)}\n")
    out.write("\n== Response time per handler (mean ms)\n")
    for h in sorted(set(per_phase[a]) & set(per_phase[b])):
        ta, tb = per_phase[a][h], per_phase[b][h]
        ma, mb = ta.ns / ta.requests / 1e6, tb.ns / tb.requests / 1e6
        out.write(f"   {h:<11} {ma:>8.4f} -> {mb:>8.4f}  x{(mb / ma if ma else 0):.2f}\n")
    out.flush()


def _print_graphite_hints(out: TextIO, cfg: cwconfig.Config, graphite: tuple[str, int],
                          graphite_web: str | None, points: int, buffered: int) -> None:
    base = ".".join(p for p in (cfg.graphite.prefix, cfg.host) if p)
    target = f"{base}.handler.*.watch.Database_get_player.calls_per_request.mean"
    out.write(f"\n== Graphite: {points} points sent to {graphite[0]}:{graphite[1]}"
              + (f", {buffered} still buffered (carbon unreachable?)" if buffered else "") + "\n")
    web = graphite_web or "http://GRAPHITE-WEB"
    out.write(f"   metrics live under {base}.handler.<handler>...; for example:\n")
    out.write(f"   curl -s '{web}/render?target={target}&from=-10min&format=json'\n")
    out.write(f"   {web}/render?target={target}&from=-10min&width=900&height=400  (a PNG chart)\n")

