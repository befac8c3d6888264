"""Metric names: the one place where a Graphite path or tag set is made.

The exporter, the alert queries, the Grafana builder and the docs take names from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from .aggregate import BACKGROUND, GC, GC_GENERATIONS, GC_OUTSIDE, FuncStats, HandlerStats, Snapshot, share
from .config import Config

__all__ = ["Namer", "Pattern", "Point", "sanitize"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_NAME = 120


def sanitize(name: str) -> str:
    """One Graphite path component: ``[A-Za-z0-9_-]`` only, at most 120 characters."""
    safe = _UNSAFE.sub("_", name)[:MAX_NAME]
    return safe or "_"


Point = tuple[str, float, Mapping[str, str]]

RESPONSE_STATS = ("mean", "max", "p50", "p90", "p99")
QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


class Namer:
    """Turns a snapshot into (metric, value, tags) points; see README "Metric names".

    Hierarchical (default)::

        <prefix>.<host>.handler.<handler>.requests
        <prefix>.<host>.handler.<handler>.watch.<function>.calls_per_request.mean

    Tagged (``graphite.tags: true``)::

        <prefix>.requests;handler=<handler>;host=<host>
        <prefix>.watch.calls_per_request.mean;function=<function>;group=<group>;handler=...
    """

    def __init__(self, prefix: str, host: str, *, tags: bool = False,
                 rename: Mapping[str, str] | None = None, worker: str = "") -> None:
        self.prefix = prefix
        self.host = host
        self.worker = worker
        self.tags = tags
        self.rename = dict(rename or {})
        # One path component for "who sent it": web1_w0 (host and worker slot), so a single
        # wildcard sums over workers and hosts alike: callwatch.*.handler.login.requests
        origin = "_".join(p for p in (host, worker) if p)
        self._base = ".".join(p for p in (prefix, origin) if p)
        self._handler_names: dict[str, str] = {}

    @classmethod
    def from_config(cls, cfg: Config, worker: str = "") -> Namer:
        """The namer of a configuration; ``worker``: this process's worker name."""
        return cls(cfg.graphite.prefix, cfg.host, tags=cfg.graphite.tags, rename=cfg.handlers.rename,
                   worker=worker)

    def handler(self, raw: str) -> str:
        """The path component of handler ``raw``: renamed (handlers.rename), sanitized."""
        name = self._handler_names.get(raw)
        if name is None:
            name = sanitize(str(self.rename.get(raw, raw)))
            if len(self._handler_names) < 10_000:
                self._handler_names[raw] = name
        return name

    def _name(self, parts: Iterable[str]) -> str:
        return ".".join(p for p in parts if p)

    def handler_metric(self, handler: str, metric: str,
                       split: tuple[str, str] | None = None) -> tuple[str, Mapping[str, str]]:
        """Name and tags of a handler metric; ``split`` = (dimension, value)."""
        if self.tags:
            return (self._name((self.prefix, "by" if split else "", metric)),
                    self._tags(handler=handler, **self._split_tags(split)))
        return self._name((self._base, "handler", handler, *self._split_path(split), metric)), {}

    def watch_metric(self, handler: str, kind: str, what: str, group: str | None,
                     metric: str, split: tuple[str, str] | None = None) -> tuple[str, Mapping[str, str]]:
        """``kind`` is "watch" (``what`` = function) or "group" (``what`` = group)."""
        if self.tags:
            if kind == "watch":
                tags = self._tags(handler=handler, function=what, group=group or "", **self._split_tags(split))
            else:
                tags = self._tags(handler=handler, group=what, **self._split_tags(split))
            return self._name((self.prefix, "by" if split else "", kind, metric)), tags
        return self._name((self._base, "handler", handler, *self._split_path(split), kind, what, metric)), {}

    @staticmethod
    def _split_path(split: tuple[str, str] | None) -> tuple[str, ...]:
        return ("by", split[0], split[1]) if split else ()

    @staticmethod
    def _split_tags(split: tuple[str, str] | None) -> dict[str, str]:
        return {"dimension": split[0], "value": split[1]} if split else {}

    def profile_metric(self, handler: str, fn: str, metric: str) -> tuple[str, Mapping[str, str]]:
        """``fn`` (a sanitized function label) "" for the handler's own profile metrics (requests)."""
        if self.tags:
            return self._name((self.prefix, "profile", metric)), self._tags(handler=handler, function=fn)
        return self._name((self._base, "handler", handler, "profile", fn, metric)), {}

    def self_metric(self, metric: str) -> tuple[str, Mapping[str, str]]:
        """callwatch's own (the self-metrics): ``points_sent``, ``flush_ms``..."""
        return self._origin_metric("callwatch", metric)

    def process_metric(self, metric: str) -> tuple[str, Mapping[str, str]]:
        """The process's own: ``gc.gen0.collections``, ``memory.rss_mb``..."""
        return self._origin_metric("process", metric)

    def _origin_metric(self, part: str, metric: str) -> tuple[str, Mapping[str, str]]:
        if self.tags:
            return self._name((self.prefix, part, metric)), self._tags()
        return self._name((self._base, part, metric)), {}

    def _tags(self, **tags: str) -> dict[str, str]:
        if self.host:
            tags["host"] = self.host
        if self.worker:
            tags["worker"] = self.worker
        return {k: v for k, v in tags.items() if v}

    def points(self, snap: Snapshot) -> list[Point]:
        """Every point of the interval ``snap``: handlers, watched functions and groups,
        spikes, the process's metrics and the profiles (not the self-metrics)."""
        out: list[Point] = []
        for (h, split), hs in sorted(self._merged(snap).items(), key=lambda kv: (kv[0][0], kv[0][1] or ("", ""))):
            if h != BACKGROUND:
                out += self._handler_points(h, split, hs)
            out += self._watch_points(h, split, hs, snap)
        for (raw, fname, is_group), ratio in sorted(snap.spikes.items()):
            n, t = self.watch_metric(self.handler(raw), "group" if is_group else "watch", fname, None, "spike")
            out.append((n, round(min(ratio, 1e6), 3), t))
        out += self._process_points(snap)
        for raw, ps in sorted(snap.profiles.items()):
            h = self.handler(raw)
            n, t = self.profile_metric(h, "", "requests")
            out.append((n, ps.requests, t))
            r = ps.requests or 1
            for label in snap.profile_top.get(raw, ()):
                calls, own, cum = ps.funcs[label]
                for metric, value in (("calls_per_request", round(calls / r, 6)),
                                      ("ms_per_request", _ms(cum / r)),
                                      ("own_ms_per_request", _ms(own / r))):
                    n, t = self.profile_metric(h, sanitize(label), metric)
                    out.append((n, value, t))
        return out

    def _merged(self, snap: Snapshot) -> dict[tuple[str, tuple[str, str] | None], HandlerStats]:
        """Names that sanitize (or rename) to the same metric path are merged, not sent twice."""
        merged: dict[tuple[str, tuple[str, str] | None], HandlerStats] = {}
        for raw, hs in snap.handlers.items():
            key: tuple[str, tuple[str, str] | None]
            if isinstance(raw, tuple):
                key = (self.handler(raw[0]), (sanitize(str(raw[1])), sanitize(str(raw[2]))))
            else:
                key = (self.handler(raw), None)
            if key in merged:
                merged[key].merge(hs)
            else:
                merged[key] = hs
        return merged

    def _handler_points(self, h: str, split: tuple[str, str] | None, hs: HandlerStats) -> list[Point]:
        out: list[Point] = []
        r = hs.requests
        for metric, count in (("requests", r), ("errors", hs.errors)):
            n, t = self.handler_metric(h, metric, split)
            out.append((n, count, t))
        if r:
            values = {"mean": _ms(hs.ns / r), "max": _ms(hs.ns_max)}
            for stat, q in QUANTILES.items():
                values[stat] = _ms(hs.quantile_ns(q))
            for stat in RESPONSE_STATS:
                n, t = self.handler_metric(h, "response_ms." + stat, split)
                out.append((n, values[stat], t))
        return out

    def _watch_points(self, h: str, split: tuple[str, str] | None, hs: HandlerStats, snap: Snapshot) -> list[Point]:
        out: list[Point] = []
        r = hs.requests
        entries = snap.entries
        for k, fs in sorted(hs.funcs.items(), key=lambda kv: entries[kv[0]].name):
            e = entries[k]
            if e.runtime:
                if e.name == GC and h != BACKGROUND:
                    out += self._gc_points(h, split, hs, fs)
                continue  # the process's: _process_points
            kind = "group" if e.is_group else "watch"
            vals: list[tuple[str, float]] = [("calls", fs.calls), ("ms", _ms(fs.ns))]
            if r and h != BACKGROUND:
                vals += [
                    ("calls_per_request.mean", round(fs.calls / r, 6)),
                    ("calls_per_request.max", fs.calls_max),
                    ("ms_per_request.mean", _ms(fs.ns / r)),
                    ("ms_per_request.max", _ms(fs.ns_max)),
                    ("share", round(share(fs.ns, hs.ns), 3)),
                ]
            for metric, value in vals:
                n, t = self.watch_metric(h, kind, e.name, e.group, metric, split)
                out.append((n, value, t))
        return out


    def _gc_points(self, h: str, split: tuple[str, str] | None, hs: HandlerStats, fs: FuncStats) -> list[Point]:
        """The collections that ran during the handler's requests, and their pause."""
        r = hs.requests
        vals: list[tuple[str, float]] = [("collections", fs.calls), ("ms", _ms(fs.ns))]
        if r:
            vals += [("collections_per_request.mean", round(fs.calls / r, 6)),
                     ("collections_per_request.max", fs.calls_max),
                     ("ms_per_request.mean", _ms(fs.ns / r)),
                     ("ms_per_request.max", _ms(fs.ns_max)),
                     ("share", round(share(fs.ns, hs.ns), 3))]
        out: list[Point] = []
        for metric, value in vals:
            n, t = self.handler_metric(h, "gc." + metric, split)
            out.append((n, value, t))
        return out

    def _process_points(self, snap: Snapshot) -> list[Point]:
        """Collections per generation and outside requests (the background table's runtime
        entries, ``callwatch.memory``), and the memory gauges."""
        vals: dict[str, float] = {}
        bg = snap.handlers.get(BACKGROUND)
        if bg is not None:
            got = {snap.entries[k].name: fs for k, fs in bg.funcs.items() if snap.entries[k].runtime}
            # Outside requests: no request at all, or a watched call outside any (its
            # background state is the "request" the collection ran in).
            outside = [got[n] for n in (GC, GC_OUTSIDE) if n in got]
            if outside:
                vals["gc.outside_requests.collections"] = sum(fs.calls for fs in outside)
                vals["gc.outside_requests.pause_ms"] = _ms(sum(fs.ns for fs in outside))
            for g, (each, collected, uncollectable) in enumerate(GC_GENERATIONS):
                fs = got.get(each)
                if fs is not None:
                    vals.update({f"gc.gen{g}.collections": fs.calls, f"gc.gen{g}.pause_ms": _ms(fs.ns),
                                 f"gc.gen{g}.pause_ms_max": _ms(fs.ns_max)})
                    for what, key in (("collected", collected), ("uncollectable", uncollectable)):
                        vals[f"gc.gen{g}.{what}"] = got[key].calls if key in got else 0
        for name, value in snap.gauges.items():
            vals["memory." + name] = value
        out: list[Point] = []
        for metric, value in sorted(vals.items()):
            n, t = self.process_metric(metric)
            out.append((n, value, t))
        return out


def _ms(ns: float) -> float:
    return round(ns / 1e6, 6)


#: Where a Namer puts a value, a Pattern puts this (any value), or a dashboard variable.
ANY = "*"
_MARK = "\x00"  # marks a field in a probe name, to find the node it lands on


@dataclass(frozen=True)
class Pattern:
    """Graphite query patterns for the series :class:`Namer` writes, from the same layout.

    A Namer whose values are wildcards (or Grafana variables) names a pattern, so the
    dashboards and alert rules never spell a path::

        >>> p = Pattern("cw", tags=False, origin=True)
        >>> p.watch("calls", handler="deal")
        'cw.*.handler.deal.watch.*.calls'
        >>> Pattern("cw", tags=True, origin=True).watch("calls", handler="deal")
        "seriesByTag('name=cw.watch.calls', 'handler=deal')"

    ``group()`` and ``alias()`` name fields (origin, handler, function, group, dimension,
    value, stat) and become node numbers (hierarchical) or tag names (tagged), which
    Graphite 1.1's groupByNodes and aliasByNode both accept.
    """

    prefix: str
    tags: bool = False
    origin: bool = True  # hierarchical names have a <host>_<worker> part

    @classmethod
    def from_config(cls, cfg: Config) -> Pattern:
        """The patterns of the names a configuration's namer writes."""
        return cls(cfg.graphite.prefix, cfg.graphite.tags, bool(cfg.host) or cfg.worker != "none")

    def _namer(self, origin: str) -> Namer:
        # Tagged: the origin filter is the host tag (the worker tag is left free).
        return Namer(self.prefix, origin if (self.origin or self.tags) else "", tags=self.tags)

    def handler(self, metric: str, handler: str = ANY, origin: str = ANY, split: bool = False) -> str:
        """A handler metric (requests, errors, response_ms.p99...) of matching series."""
        return self._query(*self._namer(origin).handler_metric(handler, metric, (ANY, ANY) if split else None))

    def watch(self, metric: str, handler: str = ANY, what: str = ANY, origin: str = ANY, *,
              kind: str = "watch", split: bool = False) -> str:
        """A watched function's (``kind="group"``: a group's) metric of matching series."""
        return self._query(*self._namer(origin).watch_metric(handler, kind, what, ANY if kind == "watch" else None,
                                                              metric, (ANY, ANY) if split else None))

    def profile(self, metric: str, handler: str = ANY, function: str = ANY, origin: str = ANY) -> str:
        """A profiled function's metric; ``function=""`` for the handler's profiled requests."""
        return self._query(*self._namer(origin).profile_metric(handler, function, metric))

    def self_metric(self, metric: str, origin: str = ANY) -> str:
        """One of callwatch's own metrics (``points_sent``, ``flush_ms``...) of matching series."""
        return self._query(*self._namer(origin).self_metric(metric))

    def process(self, metric: str, origin: str = ANY) -> str:
        """A process metric (``gc.gen0.pause_ms``, ``memory.rss_mb``) of matching series."""
        return self._query(*self._namer(origin).process_metric(metric))

    def values(self, field: str, handler: str = ANY) -> str:
        """A Grafana variable query listing the values of ``field`` (origin, handler or
        function; functions of ``handler``)."""
        if self.tags:
            n = self._namer(ANY)
            name = n.watch_metric(ANY, "watch", ANY, None, "calls")[0] if field == "function" \
                else n.handler_metric(ANY, "requests")[0]
            tag = "host" if field == "origin" else field
            only = f", handler={handler}" if handler != ANY else ""
            return f"tag_values({tag}, name={name}{only})"
        path = self.watch("calls", handler) if field == "function" else self.handler("requests", handler)
        return ".".join(path.split(".")[: self._node(field, False) + 1])

    def var(self, name: str) -> str:
        """A Grafana variable as this layout filters by it (a glob, or a regex for tags)."""
        return "${%s:regex}" % name if self.tags else "$" + name

    def _query(self, name: str, tags: Mapping[str, str]) -> str:
        if not self.tags:
            return name
        specs = [_tag_spec("name", name)]
        specs += [_tag_spec(k, v) for k, v in sorted(tags.items()) if v != ANY]
        return "seriesByTag(" + ", ".join(f"'{s}'" for s in specs) + ")"

    def nodes(self, *fields: str, split: bool = False) -> str:
        """The node numbers (hierarchical) or tag names (tagged) of ``fields``, comma-joined."""
        out: list[str] = []
        for f in fields:
            if self.tags:
                out += ["'host'", "'worker'"] if f == "origin" else ["-1"] if f == "stat" else [f"'{f}'"]
            elif f != "origin" or self.origin:
                out.append(str(self._node(f, split)))
        return ", ".join(out)

    def _node(self, field: str, split: bool) -> int:
        if field == "stat":
            return -1
        probe = Namer(self.prefix, _MARK + "origin" if self.origin else "")
        name, _ = probe.watch_metric(_MARK + "handler", "watch", _MARK + "what", None, "m",
                                     (_MARK + "dimension", _MARK + "value") if split else None)
        key = "what" if field in ("function", "group") else field
        return name.split(".").index(_MARK + key)

    def process_node(self, field: str) -> int:
        """The node of a process metric's ``type`` (the census's) or ``generation`` (gc's)
        in the series names, in either layout (for aliasByNode and groupByNodes)."""
        probe = Namer(self.prefix, "" if self.tags else (_MARK + "origin" if self.origin else ""), tags=self.tags)
        metric = {"type": f"memory.types.{_MARK}type.count", "generation": f"gc.{_MARK}generation.pause_ms"}[field]
        return probe.process_metric(metric)[0].split(".").index(_MARK + field)

    def group(self, pattern: str, agg: str, *fields: str, split: bool = False) -> str:
        """Series of ``pattern`` aggregated (sum, avg, max) per value of ``fields``."""
        return f"groupByNodes({pattern}, '{agg}', {self.nodes(*fields, split=split)})"

    def alias(self, pattern: str, *fields: str, split: bool = False) -> str:
        """Series of ``pattern`` named by ``fields``' values, dot-joined."""
        return f"aliasByNode({pattern}, {self.nodes(*fields, split=split)})"


def _tag_spec(key: str, value: str) -> str:
    if "$" in value:  # a Grafana variable, formatted as a regex (Pattern.var); =~ is re.match
        return f"{key}=~^{value}$"
    if "*" in value or "{" in value:  # a glob: the same set, as an anchored regex
        rx = value.replace(".", "[.]").replace("*", "[^.]*").replace("{", "(").replace("}", ")").replace(",", "|")
        return f"{key}=~^{rx}$"
    return f"{key}={value}"
