"""Drive the card-game server with a table of 2 players, then 7, through the real pipeline.

The watched functions come from ``callwatch.yaml`` beside this file (resolved by dotted
path and glob, as in a user's config); the flush thread, the snapshot and, with
``--graphite``, the graphyte sender are the same ones a server uses.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import callwatch

from .. import config as cwconfig
from ..aggregate import BACKGROUND, Snapshot
from ..naming import Pattern
from . import explained as why, game, leak
from .phases import PHASES, Phases

CONFIG = Path(__file__).with_name("callwatch.yaml")
GREW_RATIO, GREW_ABS = 1.5, 0.5  # "what grew": calls per request up by both x1.5 and +0.5
#: with a profiles directory, each handler's next request is profiled at least this often
#: (the policy's min_interval): deal is 1 request in 43 at 7 players, so on a loaded machine
#: the 5 % rate alone sometimes profiled no 7-player deal in the phase, and the comparison
#: had nothing to compare
MIN_INTERVAL_S = 0.25


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

    @property
    def grew(self) -> bool:  # real growth only: 0.001 -> 0.002 per request doubled but did not grow
        return self.after >= self.before * GREW_RATIO and self.after - self.before >= GREW_ABS


@dataclass
class DemoResult:
    phases: dict[int, dict[str, Totals]]
    growth: list[Growth]
    snapshots: int
    points_sent: int
    profiles: "ProfileReport | None" = None
    leak_report: Path | None = None  # the leak hunt's, with an output directory
    intervals: list[tuple[Snapshot, int]] = field(default_factory=list)  # each flush's, with its table size
    explained: why.Explained | None = None  # the last section: callwatch explain on deal


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


def _worker(n: int, stop_at: float, pause: float, phases: Phases) -> None:
    server = game.Server(seed=n)
    for uid in range(1, 100):
        server.db.add_user(n * 1000 + uid, f"player{uid}")
    server.db.add_table(n, f"table{n}")
    while True:
        players = phases.next_round(stop_at)
        if players is None:
            return
        one_round(server, players, n, n * 1000 + 1)
        if players == PHASES[0]:
            phases.small_done(time.time())
        time.sleep(pause)


def _print_snapshot(out: TextIO, snap: Snapshot, phase: str) -> None:
    start = time.strftime("%H:%M:%S", time.localtime(snap.start))
    end = time.strftime("%H:%M:%S", time.localtime(snap.end))
    out.write(f"\n== {start}-{end}  {phase}\n")
    out.write(f"   {'handler':<11} {'req':>6} {'p99 ms':>7}   {'watched call':<22} {'calls/req':>9} {'ms/req':>8}\n")
    for h, hs in sorted((k, v) for k, v in snap.handlers.items() if isinstance(k, str)):
        if h == BACKGROUND or not hs.requests:
            continue
        rows = sorted(((snap.entries[k], fs) for k, fs in hs.funcs.items() if fs.calls),
                      key=lambda x: (x[0].is_group, x[0].name))
        head = f"   {h:<11} {hs.requests:>6} {hs.quantile_ns(0.99) / 1e6:>7.3f}   "
        if not rows:
            out.write(head + "\n")
        for i, (e, fs) in enumerate(rows):
            label = f"[{e.name}]" if e.is_group else e.name
            out.write(f"{head if i == 0 else ' ' * len(head)}{label:<22} "
                      f"{fs.calls / hs.requests:>9.2f} {fs.ns / hs.requests / 1e6:>8.4f}\n")
    out.flush()


class _Recorder:
    """The snapshot sink: keeps each snapshot with when its requests were recorded."""

    def __init__(self, out: TextIO, phases: Phases) -> None:
        self.out = out
        self.phases = phases
        self.taken: list[tuple[Snapshot, int]] = []  # each snapshot with its table size
        self._lock = threading.Lock()

    def __call__(self, snap: Snapshot) -> None:
        # Called by the flush thread right after the swap, so the switch happens here.
        with self._lock:
            p = self.phases.at_flush(time.time())
            self.taken.append((snap, p))
            _print_snapshot(self.out, snap, f"table of {p} players")

    def per_phase(self) -> dict[int, dict[str, Totals]]:
        per: dict[int, dict[str, Totals]] = {p: {} for p in PHASES}
        for snap, p in self.taken:
            _add(per[p], snap)
        return per


def _config(interval: int, graphite: tuple[str, int] | None, graphite_web: str | None,
            graphite_config: cwconfig.GraphiteConfig | None, dump_dir: Path | None) -> cwconfig.Config:
    cfg = cwconfig.load(CONFIG)
    if dump_dir is not None:
        cfg = dataclasses.replace(cfg, profile=cwconfig.ProfileConfig(
            rate=0.05, min_interval=MIN_INTERVAL_S, dump_dir=str(dump_dir), keep_per_handler=1000, max_dump_mb=100,
            # A profiled request here costs several unprofiled ones, so the default 2 %
            # budget cut the rate to ~0.3 % within a second, and the 7-player phase
            # (deal is 1 request in 43) sometimes had no deal profiled at all: budget off.
            budget=1.0,
            # At 5 % the other handlers' dumps overflow the queue of dumps per flush
            # (MAX_QUEUED) and crowd out deal's; only deal saves hands, so dump just those.
            call_budget={"Database_save_hand": 0}))
    g = dataclasses.replace(graphite_config or cfg.graphite, interval=interval)
    if graphite is not None:
        g = dataclasses.replace(g, host=graphite[0], port=graphite[1])
    if graphite_web:
        g = dataclasses.replace(g, web_url=graphite_web)  # spike events go there
    return dataclasses.replace(cfg, enabled=True, graphite=g)


def _drive(threads: int, duration: float, pause: float, phases: Phases) -> None:
    t0 = time.time()
    workers = [threading.Thread(target=_worker, args=(n + 1, t0 + duration, pause, phases),
                                daemon=True) for n in range(threads)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        callwatch.shutdown()


def run(duration: float = 30.0, interval: int = 5, graphite: tuple[str, int] | None = None,
        graphite_web: str | None = None, threads: int = 2, out: TextIO | None = None,
        pause: float = 0.002, graphite_config: cwconfig.GraphiteConfig | None = None,
        output: str | Path | None = None) -> DemoResult:
    """Run the demo; ``graphite`` (host, port) or ``graphite_config`` also push to carbon.

    With ``output`` (and yappi installed) 5 % of the requests are profiled, ``deal``'s dumps
    go under ``output/dumps``, and the 2- and 7-player ones are compared.
    """
    import sys

    out = out or sys.stdout
    dump_dir = _profiling_dir(output, out)
    cfg = leak.configure(_config(interval, graphite, graphite_web, graphite_config, dump_dir),
                         Path(output) if output is not None else None)
    # Worker slots of its own: in the shared directory a demo started within the interval the
    # last one ended in took over its slot and merged that run's last, 7-player, partial
    # interval into its own first, 2-player, one.
    cfg = dataclasses.replace(cfg, slot_dir=tempfile.mkdtemp(prefix="callwatch-demo-slots-"))
    g = cfg.graphite
    to = (g.host, g.port) if g.host is not None else None
    # drain one interval before half-way, so that the 7-player rounds start about then
    phases = Phases(threads, time.time() + max(duration / 2 - interval, 0.0), interval)
    recorder = _Recorder(out, phases)
    out.write(f"callwatch demo: card-game server, {threads} threads, {duration:.0f} s "
              f"(table of {PHASES[0]} players, then {PHASES[1]}), flushing every {interval} s"
              + (f" to Graphite at {to[0]}:{to[1]}" if to else " in-process (no Graphite)") + "\n")
    rt = callwatch.configure(cfg, on_snapshot=recorder, strict=True)
    assert rt is not None
    leak.start_hunt(cfg, max(0.0, duration - interval))
    try:
        _drive(threads, duration, pause, phases)
    finally:
        shutil.rmtree(str(cfg.slot_dir), ignore_errors=True)
    points = rt.exporter.stats.points_sent
    per_phase = recorder.per_phase()
    growth = _growth(per_phase)
    _print_summary(out, per_phase, growth)
    if rt.spikes is not None and rt.spikes.spikes_seen:
        where = f", each posted as a Graphite event to {graphite_web}" if graphite_web else ""
        out.write(f"\n== Spikes: {rt.spikes.spikes_seen} handler x function pairs jumped in calls per request "
                  f"when the table grew{where} (see the warnings above)\n")
    if to is not None:
        _print_graphite_hints(out, cfg, to, graphite_web, points, rt.exporter.buffered)
    report = _profile_report(out, dump_dir, phases) if dump_dir is not None else None
    leaks = leak.report(out, cfg)
    explained = why.report(out, why.Demo(cfg, CONFIG, recorder.taken, PHASES, graphite_web if to else None,
                                         Path(output) if output is not None else None))
    return DemoResult(per_phase, growth, len(recorder.taken), points, report, leaks, recorder.taken, explained)


def _profiling_dir(output: str | Path | None, out: TextIO) -> Path | None:
    if output is None:
        return None
    try:
        import gprof2dot  # noqa: F401
        import yappi  # noqa: F401
    except ImportError:
        out.write("(profiling left out: pip install 'callwatch[profile]' for the dumps, diff and call graph)\n")
        return None
    dump_dir = Path(output) / "dumps"
    if dump_dir.exists():
        shutil.rmtree(dump_dir)
    return dump_dir


@dataclass
class ProfileReport:
    small: Path  # the deal dumps of the 2-player table
    big: Path
    callgraph: Path | None
    top: list[str]  # the functions that grew most, as the diff prints them
    html: Path | None = None  # report.html: the table and the call tree, grown calls in red


def _profile_report(out: TextIO, dump_dir: Path, phases: Phases) -> ProfileReport | None:
    """Split the deal dumps by table size, print the diff, draw the call graph."""
    from .. import analysis
    from .. import callgraph

    root = dump_dir.parent
    small, big = root / f"deal-{PHASES[0]}-players", root / f"deal-{PHASES[1]}-players"
    _split_dumps(dump_dir / "deal", small, big, phases)
    if not any(small.iterdir()) or not any(big.iterdir()):
        out.write("\n== Profiles: too few deal requests were profiled in a phase to compare (run longer)\n")
        return None
    a, b = analysis.load([small]), analysis.load([big])
    rows = [r for r in analysis.diff(a, b) if r.calls_b > r.calls_a * 1.0001][:8]
    out.write(f"\n== Profiled deal requests: {a.requests} with {PHASES[0]} players, {b.requests} with "
              f"{PHASES[1]} (dumps in {dump_dir}); calls per request that grew:\n")
    top = []
    for r in rows:
        name = analysis.label(r.key).rsplit("/", 1)[-1]
        top.append(name)
        ratio = "new" if r.calls_a == 0 else f"x{r.calls_ratio:.2f}"
        out.write(f"   {r.calls_a:>7.2f} -> {r.calls_b:>7.2f}  {ratio:>6}   {name}\n")
    out.write(f"   (the same with: callwatch diff {small} {big})\n")
    drawn = root / "deal-7-vs-2.svg"
    svg: Path | None = drawn
    try:
        callgraph.draw([big], drawn, diff=small, highlight=["*get_player*"])
        out.write(f"   call graph, grown calls in red: {drawn.resolve()}\n")
    except (callgraph.CallgraphError, analysis.AnalysisError) as e:
        out.write(f"   (no call graph: {e})\n")
        svg = None
    page = _html_report(out, small, big, root / "report.html")
    return ProfileReport(small, big, svg, top, page)


def _html_report(out: TextIO, small: Path, big: Path, path: Path) -> Path | None:
    from .. import analysis, report

    try:
        report.write([small], [big], path, names=(f"deal, {PHASES[0]} players", f"deal, {PHASES[1]} players"))
    except (analysis.AnalysisError, OSError) as e:
        out.write(f"   (no report.html: {e})\n")
        return None
    out.write(f"   the report to open in a browser (table and call tree, grown calls in red): {path.resolve()}\n")
    return path


def _split_dumps(deal: Path, small: Path, big: Path, phases: Phases) -> None:
    """Copy each dump made surely within one phase to that phase's folder."""
    for d in (small, big):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    for f in sorted(deal.glob("*.prof")) if deal.exists() else []:
        wall = _dump_time(f.name)
        if wall is None:
            continue
        # The name's time is cut to the millisecond: the dump was made up to 1 ms after
        # it, so a 7-player deal ending within 1 ms of the switch must not count as small.
        if wall + 0.001 <= phases.first_big_start:
            shutil.copy2(f, small / f.name)
        elif wall >= phases.last_small_end:
            shutil.copy2(f, big / f.name)


def _dump_time(name: str) -> float | None:
    """The UTC time a dump's name starts with (20261126T195512.123Z-4ms.prof)."""
    import calendar

    try:
        stamp = name.split("-", 1)[0]
        base = time.strptime(stamp[:15], "%Y%m%dT%H%M%S")
        return calendar.timegm(base) + int(stamp[16:19]) / 1000
    except (ValueError, IndexError):
        return None


def _add(totals: dict[str, Totals], snap: Snapshot) -> None:
    for h, hs in snap.handlers.items():
        if not isinstance(h, str) or h == BACKGROUND or not hs.requests:
            continue
        tot = totals.setdefault(h, Totals())
        tot.requests += hs.requests
        tot.ns += hs.ns
        for k, fs in hs.funcs.items():
            e = snap.entries[k]
            name = f"[{e.name}]" if e.is_group else e.name
            tot.calls[name] = tot.calls.get(name, 0) + fs.calls
            tot.call_ns[name] = tot.call_ns.get(name, 0) + fs.ns


def _growth(per_phase: dict[int, dict[str, Totals]]) -> list[Growth]:
    a, b = per_phase[PHASES[0]], per_phase[PHASES[1]]
    rows: list[Growth] = []
    for h in sorted(set(a) & set(b)):
        ta, tb = a[h], b[h]
        for fn in sorted(set(ta.calls) | set(tb.calls)):
            rows.append(Growth(h, fn, ta.calls.get(fn, 0) / ta.requests, tb.calls.get(fn, 0) / tb.requests))
    return rows


def _print_summary(out: TextIO, per_phase: dict[int, dict[str, Totals]], growth: list[Growth]) -> None:
    a, b = PHASES
    out.write(f"\n== What grew when the table went from {a} to {b} players (calls per request)\n")
    grown = sorted((g for g in growth if g.grew), key=lambda g: -g.ratio)
    for g in grown:
        ratio = "new" if g.before == 0 else f"x{g.ratio:.2f}"
        out.write(f"   {g.handler:<11} {g.function:<22} {g.before:>6.2f} -> {g.after:>6.2f}  {ratio}\n")
    if not grown:
        out.write("   nothing grew (was the load too short to fill an interval per phase?)\n")
    flat = sorted({g.handler for g in growth if not g.grew} - {g.handler for g in grown})
    if flat:
        out.write(f"   unchanged (below x{GREW_RATIO} and +{GREW_ABS} calls/request): {', '.join(flat)}\n")
    out.write("\n== Response time per handler (mean ms)\n")
    for h in sorted(set(per_phase[a]) & set(per_phase[b])):
        ta, tb = per_phase[a][h], per_phase[b][h]
        ma, mb = ta.ns / ta.requests / 1e6, tb.ns / tb.requests / 1e6
        out.write(f"   {h:<11} {ma:>8.4f} -> {mb:>8.4f}  x{(mb / ma if ma else 0):.2f}\n")
    out.flush()


def _print_graphite_hints(out: TextIO, cfg: cwconfig.Config, graphite: tuple[str, int],
                          graphite_web: str | None, points: int, buffered: int) -> None:
    p = Pattern.from_config(cfg)
    target = p.watch("calls_per_request.mean", what="Database_get_player")
    out.write(f"\n== Graphite: {points} points sent to {graphite[0]}:{graphite[1]}"
              + (f", {buffered} still buffered (carbon unreachable?)" if buffered else "") + "\n")
    web = graphite_web or "http://GRAPHITE-WEB"
    q = urllib.parse.quote(target, safe="*.,()'=~$^")
    out.write(f"   metrics live under {p.handler('<metric>', handler='<handler>')}; for example:\n")
    out.write(f"   curl -s '{web}/render?target={q}&from=-10min&format=json'\n")
    out.write(f"   {web}/render?target={q}&from=-10min&width=900&height=400  (a PNG chart)\n")
    if graphite_web:
        out.write(f"   curl -s '{web}/events/get_data?from=-1h&tags=callwatch'   (the spike events)\n")
    growing = urllib.parse.quote(leak.graphite_hint(cfg), safe="*.,()'=~$^")
    out.write(f"   {web}/render?target={growing}&from=-10min  (the census: the type that leaks)\n")
