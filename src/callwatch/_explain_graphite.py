"""Read a handler's :class:`callwatch.explain.Period` from graphite-web.

Every target comes from :class:`callwatch.naming.Pattern` (the exporter's layout,
hierarchical or tagged).  Counts and times (``requests``, ``watch.<f>.calls`` and ``.ms``)
are summed over origins (hosts and worker slots) with ``groupByNodes`` and over the
period's intervals here, then divided by the requests: exact pooled per-request means.
Response times are only sent as per-interval statistics, so the mean is the requests-
weighted mean of each origin's interval means (exact too); the p99 is the same weighting
of each origin's interval p99s (an approximation: percentiles do not pool).
"""

from __future__ import annotations

import fnmatch
import time
from collections import defaultdict
from dataclasses import dataclass

from . import queries
from .alerts import Points, render
from .config import Config
from .explain import Part, Period, Slice, pooled
from .naming import Pattern

__all__ = ["Reader", "group_members"]


def _in(pts: list[tuple[float, int]], start: int, end: int) -> list[tuple[float, int]]:
    return [(v, t) for v, t in pts if start <= t < end]


def group_members(cfg: Config, functions: set[str]) -> dict[str, str]:
    """function -> group, for the functions whose ``watch:`` entry names a group (a glob
    target matches as the exporter names it: dots as ``_``)."""
    out: dict[str, str] = {}
    for w in cfg.watch:
        if not w.group or not w.target or ":" not in w.target:
            continue
        pattern = w.name or w.target.split(":", 1)[1].replace(".<locals>.", ".").replace(".", "_")
        for f in sorted(functions):
            if f not in out and fnmatch.fnmatchcase(f, pattern):
                out[f] = w.group
    return out


@dataclass
class Reader:
    """Renders the period's series; ``deadline`` (time.monotonic()) bounds all of it."""

    cfg: Config
    web_url: str
    start: int
    end: int
    deadline: float

    @property
    def p(self) -> Pattern:
        return Pattern.from_config(self.cfg)

    def get(self, target: str) -> Points:
        # Graphite's from is exclusive: one second before, then the period is [start, end)
        pts = render(self.web_url, target, self.start - 1, self.end, min(self.deadline, time.monotonic() + 10))
        return {k: _in(v, self.start, self.end) for k, v in pts.items()}

    def totals(self, target: str, n: int) -> dict[tuple[str, ...], float]:
        """Sum over the period of each aliased series, keyed by its ``n`` fields."""
        return {queries.fields(k, n): sum(v for v, _ in pts) for k, pts in self.get(target).items() if pts}

    def handlers(self) -> list[str]:
        p = self.p
        return sorted(k[0] for k, v in self.totals(p.group(p.handler("requests"), "sum", "handler"), 1).items()
                      if v > 0)

    def _weighted(self, handler: str, metric: str, split: bool) -> dict[tuple[str, ...], float | None]:
        """Per (dimension, value) or (): the requests-weighted mean of ``metric`` over
        origins and intervals."""
        p, extra = self.p, (("dimension", "value") if split else ())
        req = self.get(p.alias(p.handler("requests", handler, split=split), "origin", *extra, split=split))
        val = self.get(p.alias(p.handler(metric, handler, split=split), "origin", *extra, split=split))
        n = 1 + len(extra)
        weights = {(queries.fields(k, n), t): v for k, pts in req.items() for v, t in pts}
        samples: dict[tuple[str, ...], list[tuple[float, float]]] = defaultdict(list)
        for k, pts in val.items():
            f = queries.fields(k, n)
            for v, t in pts:
                samples[f[1:]].append((v, weights.get((f, t), 0.0)))
        return {k: pooled(s) for k, s in samples.items()}

    def _parts(self, handler: str, kind: str, split: bool) -> dict[tuple[str, ...], tuple[float, float]]:
        """(dimension, value,)? function -> (ms, calls) summed over origins and time."""
        p, extra = self.p, (("dimension", "value") if split else ())
        fields = (*extra, "group" if kind == "group" else "function")
        out: dict[tuple[str, ...], tuple[float, float]] = {}
        ms = self.totals(p.group(p.watch("ms", handler, kind=kind, split=split), "sum", *fields, split=split),
                         len(fields))
        calls = self.totals(p.group(p.watch("calls", handler, kind=kind, split=split), "sum", *fields,
                                    split=split), len(fields))
        for k in set(ms) | set(calls):
            out[k] = (ms.get(k, 0.0), calls.get(k, 0.0))
        return out

    def period(self, handler: str) -> Period:
        """The handler over [start, end): raises LookupError when it had no requests."""
        p = self.p
        reqs = self.totals(p.group(p.handler("requests", handler), "sum", "handler"), 1)
        requests = sum(reqs.values())
        if not requests:
            raise LookupError(handler)
        mean = self._weighted(handler, "response_ms.mean", False).get(()) or 0.0
        p99 = self._weighted(handler, "response_ms.p99", False).get(())
        functions = {k[0]: Part(ms / requests, c / requests) for k, (ms, c) in self._parts(handler, "watch",
                                                                                          False).items()}
        groups = {k[0]: Part(ms / requests, c / requests) for k, (ms, c) in self._parts(handler, "group",
                                                                                       False).items()}
        members = group_members(self.cfg, set(functions))
        return Period(requests, mean, p99, functions, groups, members, self._values(handler, members),
                      self._profile(handler))

    def _values(self, handler: str, members: dict[str, str]) -> dict[tuple[str, str], Slice]:
        p = self.p
        reqs = self.totals(p.group(p.handler("requests", handler, split=True), "sum", "dimension", "value",
                                   split=True), 2)
        means = self._weighted(handler, "response_ms.mean", True)
        parts: dict[tuple[str, ...], dict[str, Part]] = defaultdict(dict)
        for kind in ("watch", "group"):
            for (d, v, f), (ms, c) in self._parts(handler, kind, True).items():
                r = reqs.get((d, v), 0.0)
                if r and (kind == "group" or f not in members):
                    parts[(d, v)][("function:" if kind == "watch" else "group:") + f] = Part(ms / r, c / r)
        return {(k[0], k[1]): Slice(r, means.get(k) or 0.0, parts.get(k, {})) for k, r in reqs.items() if r}

    def _profile(self, handler: str) -> dict[str, Part]:
        """Profiled functions' cumulative ms and calls per profiled request, weighted by
        each origin's profiled requests per interval."""
        p = self.p
        req = self.get(p.alias(p.profile("requests", handler, ""), "origin"))
        weights = {(queries.fields(k, 1), t): v for k, pts in req.items() for v, t in pts}
        out: dict[str, Part] = {}
        got: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
        for metric in ("ms_per_request", "calls_per_request"):
            for k, pts in self.get(p.alias(p.profile(metric, handler), "origin", "function")).items():
                origin, fn = queries.fields(k, 2)
                got[fn][metric] += [(v, weights.get(((origin,), t), 0.0)) for v, t in pts]
        for fn, m in got.items():
            out[fn] = Part(pooled(m["ms_per_request"]) or 0.0, pooled(m["calls_per_request"]) or 0.0)
        return out
