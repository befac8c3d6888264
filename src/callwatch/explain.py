"""Why a handler got slower: a change in its mean response time split into the parts that
account for it, from per-request means alone (``callwatch explain``, and the in-process
incident events of :mod:`callwatch.spikes`).

The math (``docs/explain.md`` says it at length):

- A handler's mean response time ``T`` over a period is its time summed over requests
  divided by its requests, and so is each watched component's time per request ``c``.
  Time per request is additive within a handler, so ``ΔT = Σ Δc + rest``.  The additive
  components are the groups and the watched functions in no group: a group counts the
  time of nested members once (callwatch times the outermost call of the group), while
  the functions of one group may nest, so they are shown under their group, not summed.
- A dimension splits the requests into values ``v`` with shares ``s_v`` and means
  ``t_v``; ``T = Σ s_v t_v``.  The change splits exactly (midpoint weights, ``s̄``, ``t̄``):
  ``ΔT = Σ Δs_v t̄_v  (mix)  +  Σ s̄_v Δt_v  (within)``.  With a dimension whose mix moved,
  each component's contribution is its within-value part ``Σ s̄_v Δc_v`` (its mix part is
  in the mix row), so the rows still add up to ``ΔT``.
- Profiled functions come from a sample of requests and their cumulative times nest, so
  they are listed apart and never summed.

Everything here is pure: :class:`Period` in, :class:`Explanation` out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping

from ._pooling import Totals, add_sums
from ._ranges import parse_range

if TYPE_CHECKING:
    from .aggregate import Snapshot

__all__ = ["Explanation", "Part", "Period", "Row", "Slice", "explain", "from_snapshots", "parse_range", "pool",
           "rank_handlers", "render", "short_text", "to_dict"]

#: the value name of a dimension's requests that carry no value of it (derived from totals)
UNSET = "(unset)"
#: a dimension's mix is reported when it moves at least this share of the change
MIX_MIN_SHARE = 0.05


@dataclass(frozen=True)
class Part:
    """A component's per-request means: time (ms) and calls."""

    ms: float
    calls: float


@dataclass(frozen=True)
class Slice:
    """The requests of one dimension value: how many, their mean, their components
    (``"function:<f>"``, ``"group:<g>"``)."""

    requests: float
    mean_ms: float
    parts: Mapping[str, Part] = field(default_factory=dict)


@dataclass(frozen=True)
class Period:
    """One handler over one period: per-request means (summed over origins first).

    ``members``: function -> its group.  ``values``: (dimension, value) -> Slice.
    ``profile``: profiled function -> cumulative ms and calls per profiled request."""

    requests: float
    mean_ms: float
    p99_ms: float | None = None
    functions: Mapping[str, Part] = field(default_factory=dict)
    groups: Mapping[str, Part] = field(default_factory=dict)
    members: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[tuple[str, str], Slice] = field(default_factory=dict)
    profile: Mapping[str, Part] = field(default_factory=dict)

    def parts(self) -> dict[str, Part]:
        """The additive components: groups, and the functions in no group."""
        out = {"group:" + g: p for g, p in self.groups.items()}
        out.update({"function:" + f: p for f, p in self.functions.items() if f not in self.members})
        return out


@dataclass(frozen=True)
class Row:
    """One part of the change.  ``kind``: function, group, mix, profile or unexplained;
    ``before``/``after``: ms per request (mix: share of requests, %, of ``name``'s top
    value); ``calls_*``: calls per request; ``contribution_ms``: ms per request of the
    change it accounts for; ``percent``: of the change (None when there is none)."""

    kind: str
    name: str
    before: float
    after: float
    contribution_ms: float
    percent: float | None
    calls_before: float | None = None
    calls_after: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class Explanation:
    """A handler's change of mean response time (``delta_ms``, ms per request) from
    ``before`` to ``after``, split into ranked parts (:func:`explain`)."""

    handler: str
    before: Period
    after: Period
    delta_ms: float
    rows: tuple[Row, ...]  # additive, ranked by |contribution|, then the unexplained rest
    profiled: tuple[Row, ...]  # apart: sampled and nested, never summed

    @property
    def unexplained(self) -> Row:
        """The last row: the part of the change no other row accounts for."""
        return self.rows[-1]


def _pct(x: float, delta: float) -> float | None:
    return 100.0 * x / delta if abs(delta) > 1e-9 else None


def _slices(p: Period, dim: str) -> dict[str, Slice]:
    """The values of ``dim``, plus UNSET for the requests (and time) no value accounts for."""
    got = {v: s for (d, v), s in p.values.items() if d == dim}
    rest_r = p.requests - sum(s.requests for s in got.values())
    if rest_r > 1e-9 * max(1.0, p.requests):
        rest_t = p.mean_ms * p.requests - sum(s.mean_ms * s.requests for s in got.values())
        parts = {}
        for k, whole in p.parts().items():
            left = whole.ms * p.requests - sum(s.parts.get(k, Part(0, 0)).ms * s.requests for s in got.values())
            calls = whole.calls * p.requests - sum(s.parts.get(k, Part(0, 0)).calls * s.requests
                                                   for s in got.values())
            parts[k] = Part(left / rest_r, calls / rest_r)
        got[UNSET] = Slice(rest_r, rest_t / rest_r, parts)
    return got


@dataclass(frozen=True)
class _Mix:
    dim: str
    shares: dict[str, tuple[float, float]]  # value -> (share before, after)
    weights: dict[str, float]  # value -> midpoint share
    total_ms: float
    each_ms: dict[str, float]  # value -> its part of the mix (centred: Σ is total_ms)
    before: dict[str, Slice]
    after: dict[str, Slice]


def _mix(b: Period, a: Period, dim: str) -> _Mix | None:
    sb, sa = _slices(b, dim), _slices(a, dim)
    if not b.requests or not a.requests:
        return None
    shares, weights, means = {}, {}, {}
    for v in sorted(set(sb) | set(sa)):
        s0 = sb[v].requests / b.requests if v in sb else 0.0
        s1 = sa[v].requests / a.requests if v in sa else 0.0
        # a value seen on one side only: its mean there stands for both
        t0 = sb[v].mean_ms if v in sb else sa[v].mean_ms
        t1 = sa[v].mean_ms if v in sa else t0
        shares[v], weights[v], means[v] = (s0, s1), (s0 + s1) / 2, (t0 + t1) / 2
    centre = sum(weights[v] * means[v] for v in means)
    each = {v: (shares[v][1] - shares[v][0]) * (means[v] - centre) for v in means}
    return _Mix(dim, shares, weights, sum(each.values()), each, sb, sa)


def _best_mix(b: Period, a: Period, delta: float) -> _Mix | None:
    dims = sorted({d for d, _ in b.values} | {d for d, _ in a.values})
    mixes = [m for m in (_mix(b, a, d) for d in dims) if m is not None]
    if not mixes:
        return None
    best = max(mixes, key=lambda m: abs(m.total_ms))
    return best if abs(best.total_ms) >= MIX_MIN_SHARE * abs(delta) and abs(best.total_ms) > 1e-9 else None


def _within(mix: _Mix, key: str) -> float:
    """A component's change within the values of the mix's dimension (Σ s̄_v Δc_v)."""
    out = 0.0
    for v, w in mix.weights.items():
        c0 = mix.before[v].parts.get(key, Part(0, 0)).ms if v in mix.before else None
        c1 = mix.after[v].parts.get(key, Part(0, 0)).ms if v in mix.after else None
        if c0 is not None and c1 is not None:
            out += w * (c1 - c0)
    return out


def _mix_row(mix: _Mix, delta: float) -> Row:
    # the value whose share rose most names the row; the detail lists the largest moves
    moved = sorted(mix.shares, key=lambda v: (-abs(mix.shares[v][1] - mix.shares[v][0]),
                                              mix.shares[v][0] - mix.shares[v][1]))
    top = max(sorted(mix.shares), key=lambda v: mix.shares[v][1] - mix.shares[v][0])
    detail = ", ".join(f"{mix.dim}={v} share {100 * mix.shares[v][0]:.0f} % -> {100 * mix.shares[v][1]:.0f} %"
                       for v in moved[:3] if abs(mix.shares[v][1] - mix.shares[v][0]) >= 0.005)
    return Row("mix", f"{mix.dim}={top}", 100 * mix.shares[top][0], 100 * mix.shares[top][1], mix.total_ms,
               _pct(mix.total_ms, delta), detail=detail)


def _part_rows(b: Period, a: Period, delta: float, mix: _Mix | None) -> list[Row]:
    pb, pa = b.parts(), a.parts()
    rows = []
    for key in sorted(set(pb) | set(pa)):
        kind, name = key.split(":", 1)
        x0, x1 = pb.get(key, Part(0, 0)), pa.get(key, Part(0, 0))
        contribution = _within(mix, key) if mix is not None else x1.ms - x0.ms
        detail = _members_detail(b, a, name) if kind == "group" else ""
        rows.append(Row(kind, name, x0.ms, x1.ms, contribution, _pct(contribution, delta), x0.calls, x1.calls,
                        detail))
    return rows


def _members_detail(b: Period, a: Period, group: str) -> str:
    """The group's member whose time per request changed most."""
    names = {f for f, g in b.members.items() if g == group} | {f for f, g in a.members.items() if g == group}
    if not names:
        return ""

    def change(f: str) -> float:
        return a.functions.get(f, Part(0, 0)).ms - b.functions.get(f, Part(0, 0)).ms

    f = max(sorted(names), key=lambda n: abs(change(n)))
    x0, x1 = b.functions.get(f, Part(0, 0)), a.functions.get(f, Part(0, 0))
    return f"most: {f} {x0.calls:.2f} -> {x1.calls:.2f} calls/req, {change(f):+.2f} ms/req"


def _profile_rows(b: Period, a: Period, delta: float) -> list[Row]:
    rows = []
    for f in sorted(set(b.profile) | set(a.profile)):
        x0, x1 = b.profile.get(f, Part(0, 0)), a.profile.get(f, Part(0, 0))
        if x1.ms > x0.ms:
            rows.append(Row("profile", f, x0.ms, x1.ms, x1.ms - x0.ms, _pct(x1.ms - x0.ms, delta), x0.calls,
                            x1.calls))
    return sorted(rows, key=lambda r: -r.contribution_ms)


def explain(handler: str, before: Period, after: Period) -> Explanation:
    """The change of ``handler``'s mean response time from ``before`` to ``after``, split
    into ranked parts that add up to it (the last row: what no part accounts for)::

        >>> b = Period(100, 10.0, functions={"get_user": Part(2.0, 1.0)})
        >>> a = Period(100, 16.0, functions={"get_user": Part(8.0, 4.0)})
        >>> [(r.name, r.contribution_ms) for r in explain("login", b, a).rows]
        [('get_user', 6.0), ('unexplained', 0.0)]
    """
    delta = after.mean_ms - before.mean_ms
    mix = _best_mix(before, after, delta)
    rows = _part_rows(before, after, delta, mix)
    if mix is not None:
        rows.append(_mix_row(mix, delta))
    rows.sort(key=lambda r: (-abs(r.contribution_ms), r.kind, r.name))
    rest = delta - sum(r.contribution_ms for r in rows)
    rest = 0.0 if abs(rest) < 1e-9 else rest
    rows.append(Row("unexplained", "unexplained", 0.0, 0.0, rest, _pct(rest, delta)))
    return Explanation(handler, before, after, delta, tuple(rows), tuple(_profile_rows(before, after, delta)))


def from_snapshots(handler: str, snapshots: Iterable[Snapshot]) -> Period:
    """``handler`` over in-process intervals (the snapshots an ``on_snapshot`` callback gets:
    :class:`callwatch.aggregate.Snapshot`), pooled into per-request means from the same sums that are
    sent to Graphite, as the in-process incident events pool their baseline intervals (no
    profiled functions: those are only sent as per-interval statistics).  An empty period
    when the handler had no requests in them."""
    return pool([t for t in (Totals.of(s).get(handler) for s in snapshots) if t is not None])


def pool(intervals: list[Totals]) -> Period:
    """Intervals' sums pooled into per-request means (an empty list: an empty period)."""
    r = sum(t.requests for t in intervals)
    if not r:
        return Period(0, 0.0)
    parts, values = add_sums([t.parts for t in intervals]), {}
    for v in {v for t in intervals for v in t.values}:
        got = [t.values[v] for t in intervals if v in t.values]
        vr = sum(g[0] for g in got)
        values[v] = Slice(vr, sum(g[1] for g in got) / vr / 1e6,
                          {k: Part(ns / vr / 1e6, c / vr) for k, (c, ns) in add_sums([g[2] for g in got]).items()})
    members = {f: g for t in intervals for f, g in t.members.items()}

    def split(kind: str) -> dict[str, Part]:
        return {k.split(":", 1)[1]: Part(ns / r / 1e6, c / r) for k, (c, ns) in parts.items()
                if k.startswith(kind + ":")}

    return Period(r, sum(t.ns for t in intervals) / r / 1e6, pooled((t.p99_ms, t.requests) for t in intervals),
                  split("function"), split("group"), members, values)


def rank_handlers(pairs: Mapping[str, tuple[Period, Period]]) -> list[Explanation]:
    """Every handler's explanation, the largest change of mean response time first."""
    out = [explain(h, b, a) for h, (b, a) in pairs.items()]
    return sorted(out, key=lambda e: (-abs(e.delta_ms), e.handler))


def _change(b: float, a: float) -> str:
    return f"{100 * (a - b) / b:+.0f} %" if b else "new"


def row_text(r: Row) -> str:
    """One row, short: ``get_user 1.00 -> 4.00 calls/req (+6.0 ms/req)``."""
    if r.kind == "mix":
        return r.detail or f"{r.name} share {r.before:.0f} % -> {r.after:.0f} %"
    calls = f" {r.calls_before:.2f} -> {r.calls_after:.2f} calls/req" if r.calls_before is not None else ""
    what = f"group {r.name}" if r.kind == "group" else r.name
    return f"{what}{calls} ({r.contribution_ms:+.1f} ms/req)"


def short_text(e: Explanation, parts: int = 2) -> str:
    """The event text: ``login mean +150 % (10.0 -> 25.0 ms), p99 ...: get_user ...``."""
    b, a = e.before, e.after
    head = f"{e.handler} mean {_change(b.mean_ms, a.mean_ms)} ({b.mean_ms:.1f} -> {a.mean_ms:.1f} ms)"
    if b.p99_ms is not None and a.p99_ms is not None:
        head += f", p99 {_change(b.p99_ms, a.p99_ms)} ({b.p99_ms:.1f} -> {a.p99_ms:.1f} ms)"
    tops = [row_text(r) for r in e.rows[:-1] if r.contribution_ms * e.delta_ms > 0][:parts]
    return head + (": " + ", ".join(tops) if tops else ": no watched part explains it")


def to_dict(e: Explanation) -> dict[str, object]:
    """The explanation as JSON-ready data (``callwatch explain --json``)."""
    def row(r: Row) -> dict[str, object]:
        return {"kind": r.kind, "name": r.name, "before": r.before, "after": r.after,
                "calls_per_request": None if r.calls_before is None else [r.calls_before, r.calls_after],
                "contribution_ms": r.contribution_ms, "percent": r.percent, "detail": r.detail}

    return {"handler": e.handler, "requests": [e.before.requests, e.after.requests],
            "mean_ms": [e.before.mean_ms, e.after.mean_ms], "p99_ms": [e.before.p99_ms, e.after.p99_ms],
            "delta_ms": e.delta_ms, "rows": [row(r) for r in e.rows], "profiled": [row(r) for r in e.profiled],
            "summary": short_text(e)}


def pooled(samples: Iterable[tuple[float, float]]) -> float | None:
    """The mean of per-interval means weighted by their requests: ``[(mean, requests)]``."""
    total = weight = 0.0
    for mean, n in samples:
        total += mean * n
        weight += n
    return total / weight if weight else None


def _line(r: Row) -> str:
    pct = f"{r.percent:>5.0f} %" if r.percent is not None else "     - "
    if r.kind == "mix":
        what, how = f"mix {r.name}", r.detail or f"share {r.before:.0f} % -> {r.after:.0f} %"
    elif r.kind == "unexplained":
        what, how = "unexplained", ""
    else:
        what = f"group {r.name}" if r.kind == "group" else r.name
        calls = f"{r.calls_before:.2f} -> {r.calls_after:.2f} calls/req, " if r.calls_before is not None else ""
        how = f"{calls}{r.before:.2f} -> {r.after:.2f} ms/req" + (f"; {r.detail}" if r.detail else "")
    return f"  {r.contribution_ms:>+9.2f} ms {pct}   {what:<28} {how}".rstrip()


def render(e: Explanation, shown: int = 10) -> str:
    """The explanation as ``callwatch explain`` prints it."""
    b, a = e.before, e.after
    head = f"{e.handler}: mean {b.mean_ms:.2f} -> {a.mean_ms:.2f} ms ({e.delta_ms:+.2f} ms, {_change(b.mean_ms, a.mean_ms)})"
    if b.p99_ms is not None and a.p99_ms is not None:
        head += f", p99 {b.p99_ms:.2f} -> {a.p99_ms:.2f} ms"
    head += f"; requests {b.requests:g} -> {a.requests:g}"
    lines = [head, "  per request        of change   part"]
    lines += [_line(r) for r in [*e.rows[:-1][:shown], e.unexplained]]
    if e.profiled:
        lines.append("  profiled functions that grew (sampled, cumulative: nested, not summed):")
        lines += [_line(r) for r in e.profiled[:shown]]
    return "\n".join(lines)
