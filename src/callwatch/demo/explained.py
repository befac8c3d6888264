"""The demo's last section: ``callwatch explain`` on deal's 2 -> 7 players change.

Before: the intervals of the 2-player table; after: those of the 7-player one.  With a
Graphite it pushed to and a graphite-web, the demo reads both periods back through
``callwatch explain``'s own Graphite front end, waiting up to :data:`READ_BACK_S` until
every request, call and ms it counted is there, in the totals and per dimension value
(graphite-web finds a new series, such as the first ``players=7`` ones, only once carbon
has created its file).  Otherwise, or when they are not all there in time, it pools its
in-process snapshots (:func:`callwatch.explain.from_snapshots`).  Either way the analysis
is :func:`callwatch.explain.explain`'s, nothing of its own.

Each period holds one table size, so the ``players`` dimension's mix (2 -> 7) accounts for
all of the change: that is what ``callwatch explain``'s table says first.  What a 7-player
deal does more is the same analysis without the dimension: the components ranked by their
change of time per request.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .. import config as cwconfig
from .. import explain as ex
from ..aggregate import Snapshot
from ..errors import GraphiteError

HANDLER = "deal"
#: how long the demo waits for graphite-web to have all of its points
READ_BACK_S = 10.0
_Ranges = dict[int, tuple[int, int]]  # table size -> [start, end) of its intervals' timestamps


@dataclass
class Explained:
    """What the section printed, and what it came from."""

    explanation: ex.Explanation  # as ``callwatch explain`` ranks it (the players mix first)
    parts: ex.Explanation  # the same periods without dimensions: the components ranked
    source: str  # "graphite-web" or "in-process"
    lines: list[str]  # the explanation, as printed (without the section's other lines)
    in_process: tuple[ex.Period, ex.Period]
    command: str | None = None  # the ``callwatch explain`` command line (with graphite-web)
    note: str = ""  # why the in-process history was used although graphite-web was given


def phase_ranges(intervals: list[tuple[Snapshot, int]], interval: int) -> _Ranges:
    """Per table size, ``[start, end)`` of the timestamps its intervals' points have in
    Graphite (the exporter stamps a point with its interval's start, in whole seconds)."""
    stamps: dict[int, list[int]] = {}
    for snap, players in intervals:
        if _requests(snap):
            stamps.setdefault(players, []).append(int(snap.start))
    out: _Ranges = {}
    for players, ts in stamps.items():
        later = [min(t) for p, t in stamps.items() if min(t) > max(ts)]
        out[players] = (min(ts), min([max(ts) + interval, *later]))
    return out


def _requests(snap: Snapshot) -> int:
    hs = snap.handlers.get(HANDLER)
    return hs.requests if hs is not None else 0


def _sums(p: ex.Period) -> dict[tuple[str, ...], float]:
    """What the period adds up: its requests and total response ms (mean and p99 times the
    requests), each function's and group's calls and ms, and the same per dimension value
    (its additive components: groups, functions in none)."""
    out: dict[tuple[str, ...], float] = {("requests",): p.requests, ("mean ms",): p.mean_ms * p.requests,
                                         ("p99 ms",): (p.p99_ms or 0.0) * p.requests}
    for kind, parts in (("function", p.functions), ("group", p.groups)):
        for name, x in parts.items():
            out[(kind, name, "calls")], out[(kind, name, "ms")] = x.calls * p.requests, x.ms * p.requests
    for (d, v), sl in p.values.items():
        out[(f"{d}={v}", "requests")], out[(f"{d}={v}", "mean ms")] = sl.requests, sl.mean_ms * sl.requests
        for k, x in sl.parts.items():
            if k.startswith("group:") or k.split(":", 1)[1] not in p.members:
                out[(f"{d}={v}", k, "calls")], out[(f"{d}={v}", k, "ms")] = x.calls * sl.requests, x.ms * sl.requests
    return out


def _missing(got: ex.Period, want: ex.Period) -> str | None:
    """The first sum of ``want`` that ``got`` does not have (counts exactly; ms to the
    rounding of the values sent, 1 ns each), or None."""
    g, w = _sums(got), _sums(want)
    for key in sorted(set(g) | set(w)):
        a, b = g.get(key, 0.0), w.get(key, 0.0)
        same = round(a) == round(b) if key[-1] in ("requests", "calls") else math.isclose(a, b, rel_tol=1e-5,
                                                                                          abs_tol=1e-2)
        if not same:
            return f"{' '.join(key)} {a:g} of {b:g}"
    return None


def read_back(cfg: cwconfig.Config, web_url: str, ranges: tuple[tuple[int, int], tuple[int, int]],
              expect: tuple[ex.Period, ex.Period], wait: float | None = None) -> tuple[ex.Period, ex.Period] | str:
    """Both periods from graphite-web, once they add up to ``expect`` (the in-process
    periods: every request, call and ms, in total and per dimension value); the reason
    (str) when they do not within ``wait`` seconds (default :data:`READ_BACK_S`)."""
    from .._explain_graphite import Reader

    wait = READ_BACK_S if wait is None else wait
    deadline = time.monotonic() + wait
    while True:
        try:
            got = tuple(Reader(cfg, web_url, s, e, deadline).period(HANDLER) for s, e in ranges)
            missing = [(n, m) for n, m in zip(("before", "after"), map(_missing, got, expect)) if m is not None]
            if not missing:
                return got[0], got[1]
            why = f"graphite-web did not have all of {HANDLER}'s series ({missing[0][0]}: {missing[0][1]})"
        except LookupError:
            why = f"graphite-web had no {HANDLER} request in a period"
        except GraphiteError as e:
            why = str(e)
        if time.monotonic() + 0.5 >= deadline:
            return f"after {wait:.0f} s, {why}"
        time.sleep(0.5)


def _members(e: ex.Explanation, group: str) -> str:
    """The group's functions called more or less often per request, the largest change of
    time per request first."""
    b, a = e.before, e.after
    names = {f for f, g in [*b.members.items(), *a.members.items()] if g == group}
    zero = ex.Part(0.0, 0.0)
    rows = [(f, b.functions.get(f, zero), a.functions.get(f, zero)) for f in sorted(names)]
    rows = sorted((r for r in rows if abs(r[2].calls - r[1].calls) >= 0.005), key=lambda r: -abs(r[2].ms - r[1].ms))
    return ", ".join(f"{f} {x0.calls:.2f} -> {x1.calls:.2f} calls/req ({x1.ms - x0.ms:+.3f} ms/req)"
                     for f, x0, x1 in rows)


def _part_line(i: int, r: ex.Row, e: ex.Explanation) -> str:
    what = f"group {r.name}" if r.kind == "group" else r.name
    pct = f", {r.percent:.0f} %" if r.percent is not None else ""
    line = f"   {i}. {what} {r.calls_before:.2f} -> {r.calls_after:.2f} calls/req ({r.contribution_ms:+.3f} ms/req{pct})"
    members = _members(e, r.name) if r.kind == "group" else ""
    return line + (f": {members}" if members else "")


def _mix_line(e: ex.Explanation) -> str | None:
    mix = next((r for r in e.rows if r.kind == "mix"), None)
    if mix is None:
        return None
    dim = mix.name.split("=", 1)[0]
    values = [{v for d, v in p.values if d == dim} for p in (e.before, e.after)]
    pct = f", {mix.percent:.0f} %" if mix.percent is not None else ""
    line = f"   the {dim} dimension's mix: {mix.detail}: "
    if not values[0] & values[1]:
        return line + (f"no value of it is in both periods, so `callwatch explain`'s table lists this mix first, "
                       f"with all of the change ({mix.contribution_ms:+.3f} ms{pct}), and the parts at +0 within "
                       "a value")
    return line + (f"`callwatch explain`'s table lists it with {mix.contribution_ms:+.3f} ms{pct}, and each part "
                   "with its change within the values")


def lines(e: ex.Explanation, parts: ex.Explanation, shown: int = 2) -> list[str]:
    """The short explanation: the change, the top components, the dimension's mix."""
    b, a = e.before, e.after
    change = f", {100 * e.delta_ms / b.mean_ms:+.0f} %" if b.mean_ms else ""
    head = f"   {e.handler}: mean {b.mean_ms:.3f} -> {a.mean_ms:.3f} ms ({e.delta_ms:+.3f} ms{change})"
    if b.p99_ms is not None and a.p99_ms is not None:
        head += f", p99 {b.p99_ms:.3f} -> {a.p99_ms:.3f} ms"
    rest = parts.unexplained
    head += f"; requests {b.requests:g} -> {a.requests:g}; outside the watched calls {rest.contribution_ms:+.3f} ms"
    head += f" ({rest.percent:.0f} %)" if rest.percent is not None else ""
    tops = [r for r in parts.rows[:-1] if r.contribution_ms * parts.delta_ms > 0][:shown]
    out = [head, *(_part_line(i + 1, r, parts) for i, r in enumerate(tops))]
    if not tops:
        out.append("   no watched part explains it")
    mix = _mix_line(e)
    return out + ([mix] if mix else [])


def _utc(t: int) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def config_file(cfg: cwconfig.Config, demo_config: Path, where: Path) -> Path:
    """A config that ``callwatch explain`` reads the demo's series with: the demo's own
    file, or (another prefix or tags from ``callwatch demo --config``) a copy of it with
    those, written under ``where``."""
    import yaml

    own = cwconfig.load(demo_config).graphite
    if (own.prefix, own.tags) == (cfg.graphite.prefix, cfg.graphite.tags):
        return demo_config
    raw = yaml.safe_load(demo_config.read_text())
    raw["graphite"].update(prefix=cfg.graphite.prefix, tags=cfg.graphite.tags)
    where.mkdir(parents=True, exist_ok=True)
    path = where / "callwatch-demo-explain.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def command(config: Path, web_url: str, before: tuple[int, int], after: tuple[int, int]) -> str:
    args = ["callwatch", "explain", "--config", str(config), "--graphite-web", web_url, "--handler", HANDLER,
            "--before", f"{_utc(before[0])}..{_utc(before[1])}", "--after", f"{_utc(after[0])}..{_utc(after[1])}"]
    return shlex.join(args)


@dataclass(frozen=True)
class Demo:
    """What the section needs of the demo run."""

    cfg: cwconfig.Config  # as configured (its graphite prefix, tags, interval)
    config: Path  # the demo's own config file
    intervals: list[tuple[Snapshot, int]]  # each flush's snapshot with its table size
    phases: tuple[int, int]  # the table sizes, before and after
    graphite_web: str | None  # the graphite-web of the Graphite pushed to, if any
    where: Path | None  # the output directory (a config file for the command may go there)


def _source(d: Demo, out: TextIO, mine: tuple[ex.Period, ex.Period],
            periods: tuple[tuple[int, int], tuple[int, int]]) -> tuple[tuple[ex.Period, ex.Period], str, str]:
    """The two periods, from graphite-web when given and complete; their source and why not."""
    small, big = d.phases
    got = read_back(d.cfg, d.graphite_web, periods, mine) if d.graphite_web else None
    if isinstance(got, tuple):
        out.write(f"   read back from graphite-web at {d.graphite_web}: the {small}-player intervals "
                  f"against the {big}-player ones\n")
        return got, "graphite-web", ""
    if got is not None:
        out.write(f"   (not read back from graphite-web: {got})\n")
    n = [sum(1 for s, p in d.intervals if p == k and _requests(s)) for k in d.phases]
    out.write(f"   on this run's in-process history: its {n[0]} intervals of {small} players against its "
              f"{n[1]} of {big}\n")
    return mine, "in-process", got or ""


def report(out: TextIO, d: Demo) -> Explained | None:
    """Print the section; None when a table size had no deal request."""
    mine = tuple(ex.from_snapshots(HANDLER, [s for s, p in d.intervals if p == n]) for n in d.phases)
    out.write(f"\n== Why {HANDLER} got slower (callwatch explain)\n")
    if not mine[0].requests or not mine[1].requests:
        missing = d.phases[0] if not mine[0].requests else d.phases[1]
        out.write(f"   (no {HANDLER} request with {missing} players: run longer)\n")
        return None
    ranges = phase_ranges(d.intervals, d.cfg.graphite.interval)
    periods = ranges[d.phases[0]], ranges[d.phases[1]]
    (b, a), source, note = _source(d, out, (mine[0], mine[1]), periods)
    e = ex.explain(HANDLER, b, a)
    parts = ex.explain(HANDLER, dataclasses.replace(b, values={}), dataclasses.replace(a, values={}))
    shown = lines(e, parts)
    out.write(shown[0] + "\n")
    if e.delta_ms <= 0:
        out.write("   (its mean did not grow this run: times per request are noisy"
                  + (" with sampled profiling on" if d.cfg.profile is not None else "")
                  + " and under other load on the machine, while the calls per request are exact)\n")
    out.write("\n".join(shown[1:]) + "\n")
    cmd = None
    if d.graphite_web:
        where = d.where or Path(tempfile.gettempdir())
        cmd = command(config_file(d.cfg, d.config, where), d.graphite_web, *periods)
        out.write(f"   the whole table, from Graphite: {cmd}\n")
    else:
        out.write("   (`make graphite-demo` reads the same back from Graphite, and prints the `callwatch explain` "
                  "command that does)\n")
    out.flush()
    return Explained(e, parts, source, shown, (mine[0], mine[1]), cmd, note)
