"""One handler's interval as sums that pool by adding: what the in-process incident events
(:mod:`callwatch.spikes`) and :func:`callwatch.explain.from_snapshots` pool into the
per-request means of a :class:`callwatch.explain.Period` (``explain.pool``)."""

from __future__ import annotations

from dataclasses import dataclass

from .aggregate import BACKGROUND, HandlerStats, Snapshot

Sums = dict[str, list[float]]  # "function:<f>" / "group:<g>" -> [calls, ns]


@dataclass
class Totals:
    """One handler over one interval, as sums (pooled by adding): requests, response ns,
    p99 (ms), per component calls and ns, the same per dimension value."""

    requests: int
    ns: int
    p99_ms: float
    parts: Sums
    members: dict[str, str]
    values: dict[tuple[str, str], tuple[int, int, Sums]]

    @staticmethod
    def _sums(snap: Snapshot, hs: HandlerStats, members: dict[str, str]) -> Sums:
        out: Sums = {}
        for k, fs in hs.funcs.items():
            e = snap.entries[k]
            if not e.runtime:
                out[("group:" if e.is_group else "function:") + e.name] = [fs.calls, fs.ns]
                if e.group and not e.is_group:
                    members[e.name] = e.group
        return out

    @classmethod
    def of(cls, snap: Snapshot) -> dict[str, Totals]:
        out: dict[str, Totals] = {}
        for key, hs in snap.handlers.items():
            if isinstance(key, str) and key != BACKGROUND and hs.requests:
                members: dict[str, str] = {}
                out[key] = cls(hs.requests, hs.ns, hs.quantile_ns(0.99) / 1e6, cls._sums(snap, hs, members),
                               members, {})
        for key, hs in snap.handlers.items():
            if isinstance(key, tuple) and key[0] in out and hs.requests:
                t = out[key[0]]
                t.values[(str(key[1]), str(key[2]))] = (hs.requests, hs.ns, cls._sums(snap, hs, t.members))
        return out

def add_sums(sums: list[Sums]) -> Sums:
    out: Sums = {}
    for s in sums:
        for k, (c, ns) in s.items():
            got = out.setdefault(k, [0.0, 0.0])
            got[0] += c
            got[1] += ns
    return out
