"""Loading and checking the YAML configuration.

Every mistake a user can make becomes a :class:`Problem` that names the file, the line,
the key and the fix; all problems of a file are reported together as one
:class:`ConfigError`.  Nothing here imports the user's code: resolving ``watch`` targets
is ``_targets``' job.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "GraphiteConfig",
    "HandlersConfig",
    "Problem",
    "WatchTarget",
    "load",
]

ENV_CONFIG = "CALLWATCH_CONFIG"
ENV_GRAPHITE = "CALLWATCH_GRAPHITE"
ENV_DISABLED = "CALLWATCH_DISABLED"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")

#: What a metric-name component may contain (everything else is replaced by ``_``).
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_QUALNAME = re.compile(r"^[A-Za-z0-9_*?\[\]!]+(\.[A-Za-z0-9_*?\[\]!]+)*$")


@dataclass(frozen=True)
class Problem:
    """One mistake: where (``file:line``), which key, what is wrong, and how to fix it."""

    where: str
    key: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        key = f" {self.key}:" if self.key else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{self.where}:{key} {self.message}.{fix}"


class ConfigError(ValueError):
    """A configuration that cannot be used; ``str()`` has one line per problem."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class GraphiteConfig:
    host: str | None = None
    port: int = 2003
    protocol: str = "tcp"
    prefix: str = "callwatch"
    interval: int = 10
    tags: bool = False
    timeout: float = 2.0
    max_buffered_points: int = 100_000
    web_url: str | None = None  # graphite-web, for the events callwatch posts (spikes)


@dataclass(frozen=True)
class WatchTarget:
    target: str
    name: str | None = None
    group: str | None = None
    where: str = "<config>"
    preset: str | None = None  # a preset instead of a target (see callwatch.presets)
    #: "wrap" (count and time), "count" (calls only, through sys.monitoring on 3.12+), or
    #: "sampled" (target is a pattern over profiled functions, see profile.top)
    mode: str = "wrap"

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def qualname(self) -> str:
        return self.target.partition(":")[2]

    @property
    def is_glob(self) -> bool:
        return any(ch in self.qualname for ch in "*?[")


@dataclass(frozen=True)
class HandlersConfig:
    rename: Mapping[str, str] = field(default_factory=dict)
    max_handlers: int = 200
    max_dimension_values: int = 20
    #: handler -> {dimension: WatchTarget naming the function that computes it}
    dimensions: Mapping[str, Mapping[str, WatchTarget]] = field(default_factory=dict)


@dataclass(frozen=True)
class ProfileConfig:
    """``profile:``: sampled full profiles of requests (absent: off, at no cost)."""

    rate: float = 0.01  # fraction of requests profiled
    min_interval: float = 60.0  # seconds: each named handler is profiled at least this often
    budget: float = 0.02  # at most this fraction of wall time spent in profiled requests
    top: int = 10  # functions per handler pushed as metrics (cumulative time order)
    dump_dir: str | None = None  # where pstats dumps of slow/over-budget requests go
    slow_ms: float | None = None  # dump profiled requests slower than this
    call_budget: Mapping[str, int] = field(default_factory=dict)  # watched name -> max calls
    keep_per_handler: int = 20  # newest dumps kept per handler
    max_dump_mb: float = 100.0  # total size of all dumps
    trigger_file: str | None = None  # "HANDLER SECONDS" in it: profile every request of it


@dataclass(frozen=True)
class SpikesConfig:
    """In-process spike detection (on by default): calls per request against a baseline."""

    enabled: bool = True
    factor: float = 2.0  # a spike: calls per request >= factor x the baseline...
    floor: float = 3.0  # ...and >= this many calls per request
    baseline_intervals: int = 30  # the baseline: the median of this many recent intervals
    min_requests: int = 5  # intervals with fewer requests of the handler are not judged


@dataclass(frozen=True)
class AlertsConfig:
    """Rules for ``callwatch alerts check`` and the generated Grafana alert rules."""

    window: str = "10min"  # the recent period judged
    baseline: str = "1h"  # spikes: compared with the median over this period before the window
    spike_warning: float = 2.0
    spike_critical: float = 4.0
    spike_floor: float = 3.0
    p99_warning_ms: float = 500.0
    p99_critical_ms: float = 2000.0
    no_data_minutes: float = 5.0
    webhook: str | None = None


@dataclass(frozen=True)
class Config:
    enabled: bool = True
    graphite: GraphiteConfig = GraphiteConfig()
    host: str = ""  # the naming.host component ("" = left out of metric names)
    worker: str = "auto"  # naming.worker: "auto" (a slot per process) or "none"
    slot_dir: str | None = None  # naming.slot_dir: where the worker slots' lock files live
    watch: tuple[WatchTarget, ...] = ()
    handlers: HandlersConfig = HandlersConfig()
    profile: ProfileConfig | None = None
    spikes: SpikesConfig = SpikesConfig()
    alerts: AlertsConfig = AlertsConfig()
    source: str = "<defaults>"


# --------------------------------------------------------------------------------------
# A parsed value that remembers its line.


@dataclass
class _V:
    value: Any  # plain scalar, or dict[str, _V], or list[_V]
    line: int | None  # 1-based; None for dict input
    key_line: int | None = None


class _Checker:
    def __init__(self, where: str) -> None:
        self.where = where
        self.problems: list[Problem] = []

    def loc(self, v: _V | None) -> str:
        if v is None or v.line is None:
            return self.where
        return f"{self.where}:{v.line}"

    def add(self, v: _V | None, key: str, message: str, fix: str = "") -> None:
        self.problems.append(Problem(self.loc(v), key, message, fix))

    # -- typed getters; each returns the default after recording a problem ---------

    def mapping(self, v: _V, key: str, known: tuple[str, ...]) -> dict[str, _V]:
        if not isinstance(v.value, dict):
            self.add(v, key, f"expected a mapping of keys ({', '.join(known)}), got {_kind(v.value)}",
                     f"write it as '{key}:' followed by indented 'key: value' lines")
            return {}
        for k, item in v.value.items():
            if k not in known:
                close = difflib.get_close_matches(k, known, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"known keys are {', '.join(known)}"
                kv = _V(None, item.key_line if item.key_line is not None else item.line)
                self.add(kv, _join(key, k), f"unknown key '{k}'", f"remove it, or {hint}")
        return dict(v.value)

    def boolean(self, m: dict[str, _V], parent: str, name: str, default: bool) -> bool:
        v = m.get(name)
        if v is None:
            return default
        if not isinstance(v.value, bool):
            self.add(v, _join(parent, name), f"expected true or false, got {_show(v.value)}",
                     f"write '{name}: true' or '{name}: false'")
            return default
        return v.value

    def integer(self, m: dict[str, _V], parent: str, name: str, default: int,
                lo: int, hi: int | None, fix: str) -> int:
        v = m.get(name)
        if v is None:
            return default
        x = v.value
        if isinstance(x, float) and x.is_integer() and not isinstance(x, bool):
            x = int(x)
        if not isinstance(x, int) or isinstance(x, bool):
            self.add(v, _join(parent, name), f"expected a whole number, got {_show(v.value)}", fix)
            return default
        if x < lo or (hi is not None and x > hi):
            rng = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
            self.add(v, _join(parent, name), f"expected a number {rng}, got {x}", fix)
            return default
        return x

    def number(self, m: dict[str, _V], parent: str, name: str, default: float, fix: str) -> float:
        v = m.get(name)
        if v is None:
            return default
        x = v.value
        if not isinstance(x, (int, float)) or isinstance(x, bool) or x != x or x <= 0 or x == float("inf"):
            self.add(v, _join(parent, name), f"expected a number greater than 0, got {_show(x)}", fix)
            return default
        return float(x)

    def string(self, m: dict[str, _V], parent: str, name: str, default: str | None,
               *, nullable: bool = False, pattern: re.Pattern[str] | None = None,
               fix: str = "") -> str | None:
        v = m.get(name)
        if v is None:
            return default
        x = v.value
        if x is None and nullable:
            return None
        if isinstance(x, (int, float)) and not isinstance(x, bool) and pattern is not None:
            x = str(x)
        if not isinstance(x, str):
            self.add(v, _join(parent, name), f"expected a string, got {_show(x)}",
                     fix or f"quote the value: {name}: \"...\"")
            return default
        if pattern is not None and not pattern.match(x):
            self.add(v, _join(parent, name), f"{_show(x)} is not allowed here", fix)
            return default
        return x


def _join(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def _kind(x: Any) -> str:
    if isinstance(x, dict):
        return "a mapping"
    if isinstance(x, list):
        return "a list"
    return _show(x)


def _show(x: Any) -> str:
    if isinstance(x, _V):
        x = x.value
    if isinstance(x, dict):
        return "a mapping"
    if isinstance(x, list):
        return "a list"
    if x is None:
        return "nothing (null)"
    r = repr(x)
    return r if len(r) <= 60 else r[:57] + "..."


# --------------------------------------------------------------------------------------
# Reading


def _from_node(loader: yaml.SafeLoader, node: yaml.Node, chk: _Checker, path: str) -> _V:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, _V] = {}
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            kline = knode.start_mark.line + 1
            if not isinstance(key, str):
                chk.problems.append(Problem(f"{chk.where}:{kline}", path,
                                            f"keys must be strings, got {_show(key)}",
                                            "quote the key"))
                continue
            if key in out:
                chk.problems.append(Problem(f"{chk.where}:{kline}", _join(path, key),
                                            f"key '{key}' appears twice (first on line {out[key].key_line})",
                                            "keep one of them"))
                continue
            item = _from_node(loader, vnode, chk, _join(path, key))
            item.key_line = kline
            out[key] = item
        return _V(out, line)
    if isinstance(node, yaml.SequenceNode):
        return _V([_from_node(loader, n, chk, path) for n in node.value], line)
    return _V(loader.construct_object(node, deep=True), line)


def _from_plain(x: Any) -> _V:
    if isinstance(x, Mapping):
        return _V({k: _from_plain(v) for k, v in x.items()} if all(isinstance(k, str) for k in x)
                  else {str(k): _from_plain(v) for k, v in x.items()}, None)
    if isinstance(x, (list, tuple)):
        return _V([_from_plain(v) for v in x], None)
    return _V(x, None)


def _read_yaml(path: Path) -> tuple[_V, _Checker]:
    where = str(path)
    chk = _Checker(where)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem(where, "", "file not found",
                                   "check the path, or set CALLWATCH_CONFIG to the right file")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([Problem(where, "", f"cannot read the file ({e})",
                                   "make it a readable UTF-8 text file")]) from None
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as e:
        at = text[: e.position].count("\n") + 1
        ch = chr(e.character) if isinstance(e.character, int) else str(e.character)
        raise ConfigError([Problem(f"{where}:{at}", "", f"character {ch!r} is not allowed in YAML",
                                   "remove the control character (the file is not plain text there)")]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return _V({}, 1), chk
        root = _from_node(loader, node, chk, "")
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        what = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise ConfigError([Problem(f"{where}{line}", "", f"YAML syntax error: {what}",
                                   "fix the YAML at that line (indentation, a missing ':' or quote)")]) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem(where, "", f"YAML error: {e}", "fix the YAML")]) from None
    finally:
        loader.dispose()
    return root, chk


TOP_KEYS = ("enabled", "graphite", "naming", "watch", "handlers", "profile", "spikes", "alerts")
PROFILE_KEYS = ("rate", "min_interval", "budget", "top", "dump_dir", "slow_ms", "call_budget",
                "keep_per_handler", "max_dump_mb", "trigger_file")
GRAPHITE_KEYS = ("host", "port", "protocol", "prefix", "interval", "tags", "timeout", "max_buffered_points",
                 "web_url")
SPIKES_KEYS = ("enabled", "factor", "floor", "baseline_intervals", "min_requests")
ALERTS_KEYS = ("window", "baseline", "spike_warning", "spike_critical", "spike_floor", "p99_warning_ms",
               "p99_critical_ms", "no_data_minutes", "webhook")
NAMING_KEYS = ("host", "worker", "slot_dir")
WATCH_KEYS = ("target", "name", "group", "preset", "mode")
#: callwatch.presets.PRESETS, named here so that config imports nothing of callwatch's.
PRESET_NAMES = ("redis", "dbapi", "sqlalchemy", "requests", "httpx")
HANDLERS_KEYS = ("rename", "max_handlers", "max_dimension_values", "dimensions")


def load(source: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None,
         env: Mapping[str, str] | None = None) -> Config:
    """Read a configuration from a YAML path, a dict, or (``None``) ``$CALLWATCH_CONFIG``.

    Environment overrides (``CALLWATCH_GRAPHITE``, ``CALLWATCH_DISABLED``) are applied.
    Raises :class:`ConfigError` listing every problem found.
    """
    env = os.environ if env is None else env
    if isinstance(source, Config):
        return _apply_env(source, env)
    if source is None:
        path = env.get(ENV_CONFIG, "").strip()
        if path:
            source = path
    if source is None:
        root, chk = _V({}, None), _Checker("<defaults>")
    elif isinstance(source, Mapping):
        root, chk = _from_plain(source), _Checker("<dict>")
    else:
        root, chk = _read_yaml(Path(source))
    cfg = _build(root, chk)
    if chk.problems:
        raise ConfigError(chk.problems)
    return _apply_env(cfg, env)


def _build(root: _V, chk: _Checker) -> Config:
    if root.value is None:
        root = _V({}, root.line)
    top = chk.mapping(root, "", TOP_KEYS)
    enabled = chk.boolean(top, "", "enabled", True)

    g = chk.mapping(top["graphite"], "graphite", GRAPHITE_KEYS) if "graphite" in top else {}
    graphite = GraphiteConfig(
        host=chk.string(g, "graphite", "host", None, nullable=True,
                        pattern=re.compile(r"^[A-Za-z0-9_.:\-\[\]]+$"),
                        fix="give a host name or IP address, e.g. host: 127.0.0.1 (null: send nothing)"),
        port=chk.integer(g, "graphite", "port", 2003, 1, 65535,
                         "use carbon's plaintext port, e.g. port: 2003"),
        protocol=_protocol(chk, g),
        prefix=chk.string(g, "graphite", "prefix", "callwatch", pattern=re.compile(r"^$|" + _PREFIX.pattern),
                          fix="use letters, digits, '_' and '-', with '.' between parts, e.g. prefix: myapp.callwatch")
        or "",
        interval=chk.integer(g, "graphite", "interval", 10, 1, 86400,
                             "give whole seconds, at least 1 (Graphite stores one point per second "
                             "at most), e.g. interval: 10"),
        tags=chk.boolean(g, "graphite", "tags", False),
        timeout=chk.number(g, "graphite", "timeout", 2.0, "give seconds, e.g. timeout: 2.0"),
        max_buffered_points=chk.integer(g, "graphite", "max_buffered_points", 100_000, 0, None,
                                        "give a count of points, e.g. max_buffered_points: 100000"),
        web_url=chk.string(g, "graphite", "web_url", None, nullable=True,
                           pattern=re.compile(r"^https?://[^\s]+$"),
                           fix="give graphite-web's URL, e.g. web_url: http://127.0.0.1:8080"),
    )

    if "timeout" not in g:  # the default: never longer than half an interval
        graphite = dataclasses.replace(graphite, timeout=min(2.0, graphite.interval / 2))
    elif graphite.timeout >= graphite.interval:
        chk.add(g["timeout"], "graphite.timeout",
                f"{graphite.timeout:g} s is not less than the interval ({graphite.interval} s), so one stuck "
                "send could hold up the next flush", f"use a timeout under {graphite.interval} s, e.g. "
                f"timeout: {min(2.0, graphite.interval / 4):g}")

    n = chk.mapping(top["naming"], "naming", NAMING_KEYS) if "naming" in top else {}
    host = chk.string(n, "naming", "host", "auto", pattern=re.compile(r"^$|^[A-Za-z0-9_.-]+$"),
                      fix="use letters, digits, '_', '-' (dots become '_'), 'auto' for the short "
                          "host name, or \"\" to leave the host out") or ""
    if host == "auto":
        host = short_hostname()
    host = host.replace(".", "_")

    worker = "auto"
    wv = n.get("worker")
    if wv is not None:
        if wv.value not in ("auto", "none"):
            chk.add(wv, "naming.worker", f"expected auto or none, got {_show(wv.value)}",
                    "write 'worker: auto' (each process sends under its own slot, e.g. web1_w0) "
                    "or 'worker: none' (one process per host and prefix)")
        else:
            worker = str(wv.value)
    slot_dir = chk.string(n, "naming", "slot_dir", None, nullable=True,
                          fix="give a directory path, e.g. slot_dir: /run/myapp/callwatch")

    watch = _watch(chk, top.get("watch"))

    h = chk.mapping(top["handlers"], "handlers", HANDLERS_KEYS) if "handlers" in top else {}
    rename: dict[str, str] = {}
    rv = h.get("rename")
    if rv is not None:
        if not isinstance(rv.value, dict):
            chk.add(rv, "handlers.rename", f"expected a mapping of old name to new name, got {_kind(rv.value)}",
                    "write e.g. 'rename: {\"GET /users/<id>\": users_show}'")
        else:
            for old, new in rv.value.items():
                if not isinstance(new.value, str) or not new.value:
                    chk.add(new, f"handlers.rename.{old}", f"expected a non-empty string, got {_show(new.value)}",
                            "give the new handler name")
                else:
                    rename[old] = new.value
    dimensions: dict[str, dict[str, WatchTarget]] = {}
    dv = h.get("dimensions")
    if dv is not None:
        fix = "write e.g. 'dimensions: {deal: {players: \"myapp.dims:players_at_table\"}}'"
        if not isinstance(dv.value, dict):
            chk.add(dv, "handlers.dimensions", f"expected a mapping of handler to dimensions, got {_kind(dv.value)}",
                    fix)
        else:
            for hname, per in dv.value.items():
                if not isinstance(per.value, dict):
                    chk.add(per, f"handlers.dimensions.{hname}",
                            f"expected a mapping of dimension to function, got {_kind(per.value)}", fix)
                    continue
                for dname, fv in per.value.items():
                    where = f"handlers.dimensions.{hname}.{dname}"
                    f = fv.value
                    mod, colon, qual = f.partition(":") if isinstance(f, str) else ("", "", "")
                    if (not colon or not _MODULE.match(mod) or not _QUALNAME.match(qual)
                            or any(c in qual for c in "*?[")):
                        chk.add(fv, where, f"{_show(f)} is not of the form 'module.path:function'", fix)
                        continue
                    if not SAFE_NAME.match(dname):
                        chk.add(fv, where, f"the dimension name {dname!r} is not allowed",
                                "use letters, digits, '_' and '-'")
                        continue
                    dimensions.setdefault(hname, {})[dname] = WatchTarget(f, where=chk.loc(fv))
    handlers = HandlersConfig(
        dimensions=dimensions,
        rename=rename,
        max_handlers=chk.integer(h, "handlers", "max_handlers", 200, 1, None,
                                 "give a count, e.g. max_handlers: 200"),
        max_dimension_values=chk.integer(h, "handlers", "max_dimension_values", 20, 1, None,
                                         "give a count, e.g. max_dimension_values: 20"),
    )
    profile = _profile(chk, top["profile"]) if "profile" in top else None
    if profile is None:
        for w in watch:
            if w.mode == "sampled":
                chk.problems.append(Problem(w.where, "mode", "'mode: sampled' reads the sampled profiles, but "
                                            "there is no profile section", "add 'profile: {rate: 0.01}'"))
    sm = chk.mapping(top["spikes"], "spikes", SPIKES_KEYS) if "spikes" in top else {}
    sd = SpikesConfig()
    spikes = SpikesConfig(
        enabled=chk.boolean(sm, "spikes", "enabled", sd.enabled),
        factor=chk.number(sm, "spikes", "factor", sd.factor, "give a factor above 1, e.g. factor: 2"),
        floor=chk.number(sm, "spikes", "floor", sd.floor, "give calls per request, e.g. floor: 3"),
        baseline_intervals=chk.integer(sm, "spikes", "baseline_intervals", sd.baseline_intervals, 3, 100_000,
                                       "give a count of intervals, e.g. baseline_intervals: 30"),
        min_requests=chk.integer(sm, "spikes", "min_requests", sd.min_requests, 1, None,
                                 "give a count, e.g. min_requests: 5"),
    )
    am = chk.mapping(top["alerts"], "alerts", ALERTS_KEYS) if "alerts" in top else {}
    ad = AlertsConfig()
    period = re.compile(r"^\d+(s|min|h|d)$")
    alerts = AlertsConfig(
        window=chk.string(am, "alerts", "window", ad.window, pattern=period,
                          fix="give a Graphite period, e.g. window: 10min") or ad.window,
        baseline=chk.string(am, "alerts", "baseline", ad.baseline, pattern=period,
                            fix="give a Graphite period, e.g. baseline: 1h") or ad.baseline,
        spike_warning=chk.number(am, "alerts", "spike_warning", ad.spike_warning, "give a factor, e.g. 2"),
        spike_critical=chk.number(am, "alerts", "spike_critical", ad.spike_critical, "give a factor, e.g. 4"),
        spike_floor=chk.number(am, "alerts", "spike_floor", ad.spike_floor, "give calls per request, e.g. 3"),
        p99_warning_ms=chk.number(am, "alerts", "p99_warning_ms", ad.p99_warning_ms, "give ms, e.g. 500"),
        p99_critical_ms=chk.number(am, "alerts", "p99_critical_ms", ad.p99_critical_ms, "give ms, e.g. 2000"),
        no_data_minutes=chk.number(am, "alerts", "no_data_minutes", ad.no_data_minutes, "give minutes, e.g. 5"),
        webhook=chk.string(am, "alerts", "webhook", None, nullable=True, pattern=re.compile(r"^https?://\S+$"),
                           fix="give a URL, e.g. webhook: https://hooks.example/alerts"),
    )
    return Config(enabled=enabled, graphite=graphite, host=host, worker=worker, slot_dir=slot_dir,
                  watch=watch, handlers=handlers, profile=profile, spikes=spikes, alerts=alerts,
                  source=chk.where)


def _fraction(chk: _Checker, m: dict[str, _V], name: str, default: float) -> float:
    v = m.get(name)
    if v is None:
        return default
    x = v.value
    if not isinstance(x, (int, float)) or isinstance(x, bool) or not 0 <= x <= 1:
        chk.add(v, f"profile.{name}", f"expected a fraction from 0 to 1, got {_show(x)}",
                f"write e.g. '{name}: 0.01' (1 %)")
        return default
    return float(x)


def _seconds_or_zero(chk: _Checker, m: dict[str, _V], name: str, default: float) -> float:
    v = m.get(name)
    if v is None:
        return default
    x = v.value
    if not isinstance(x, (int, float)) or isinstance(x, bool) or not 0 <= x < float("inf"):
        chk.add(v, f"profile.{name}", f"expected seconds (0 or more), got {_show(x)}",
                f"write e.g. '{name}: 60' (0 turns it off)")
        return default
    return float(x)


def _profile(chk: _Checker, v: _V) -> ProfileConfig | None:
    if v.value is None:
        return ProfileConfig()
    m = chk.mapping(v, "profile", PROFILE_KEYS)
    d = ProfileConfig()
    budget: dict[str, int] = {}
    bv = m.get("call_budget")
    if bv is not None:
        if not isinstance(bv.value, dict):
            chk.add(bv, "profile.call_budget", f"expected a mapping of watched name to a count, got {_kind(bv.value)}",
                    "write e.g. 'call_budget: {get_db_user: 5}'")
        else:
            for fname, cv in bv.value.items():
                if not isinstance(cv.value, int) or isinstance(cv.value, bool) or cv.value < 0:
                    chk.add(cv, f"profile.call_budget.{fname}", f"expected a whole number, got {_show(cv.value)}",
                            "give the most calls per request that is normal, e.g. 5")
                else:
                    budget[fname] = cv.value
    slow = m.get("slow_ms")
    slow_ms: float | None = None
    if slow is not None and slow.value is not None:
        slow_ms = chk.number(m, "profile", "slow_ms", 0.0, "give milliseconds, e.g. slow_ms: 500")
    return ProfileConfig(
        rate=_fraction(chk, m, "rate", d.rate),
        min_interval=_seconds_or_zero(chk, m, "min_interval", d.min_interval),
        budget=_fraction(chk, m, "budget", d.budget),
        top=chk.integer(m, "profile", "top", d.top, 1, 1000, "give a count, e.g. top: 10"),
        dump_dir=chk.string(m, "profile", "dump_dir", None, nullable=True,
                            fix="give a directory, e.g. dump_dir: /var/tmp/callwatch-profiles"),
        slow_ms=slow_ms,
        call_budget=budget,
        keep_per_handler=chk.integer(m, "profile", "keep_per_handler", d.keep_per_handler, 1, None,
                                     "give a count, e.g. keep_per_handler: 20"),
        max_dump_mb=chk.number(m, "profile", "max_dump_mb", d.max_dump_mb, "give megabytes, e.g. max_dump_mb: 100"),
        trigger_file=chk.string(m, "profile", "trigger_file", None, nullable=True,
                                fix="give a file path, e.g. trigger_file: /tmp/callwatch-profile-now"),
    )


def _protocol(chk: _Checker, g: dict[str, _V]) -> str:
    v = g.get("protocol")
    if v is None:
        return "tcp"
    if v.value not in ("tcp", "udp"):
        chk.add(v, "graphite.protocol", f"expected tcp or udp, got {_show(v.value)}",
                "write 'protocol: tcp' (or udp)")
        return "tcp"
    return str(v.value)


def _watch(chk: _Checker, v: _V | None) -> tuple[WatchTarget, ...]:
    if v is None or v.value is None:
        return ()
    if not isinstance(v.value, list):
        chk.add(v, "watch", f"expected a list of targets, got {_kind(v.value)}",
                "write each target on its own line starting with '- '")
        return ()
    out: list[WatchTarget] = []
    for i, item in enumerate(v.value):
        key = f"watch[{i}]"
        if isinstance(item.value, str):
            m = {"target": item}
        elif isinstance(item.value, dict):
            m = chk.mapping(item, key, WATCH_KEYS)
            if "preset" in m:
                preset = _preset(chk, m, key)
                if preset is not None:
                    out.append(preset)
                continue
            if "target" not in m:
                chk.add(item, key, "missing 'target' (or 'preset')",
                        "add e.g. 'target: myapp.db:get_user' or 'preset: redis'")
                continue
        else:
            chk.add(item, key, f"expected a target string or a mapping, got {_kind(item.value)}",
                    "write '- myapp.db:get_user', '- {target: myapp.db:get_user, group: db}' "
                    "or '- {preset: redis}'")
            continue
        target = chk.string(m, key, "target", None)
        if target is None:
            continue
        tv = m["target"]
        mv = m.get("mode")
        if mv is not None and mv.value not in ("wrap", "sampled", "count"):
            chk.add(mv, f"{key}.mode", f"expected wrap, count or sampled, got {_show(mv.value)}",
                    "write 'mode: count' (calls only, cheaper on Python 3.12+), 'mode: sampled' (a pattern "
                    "over profiled functions), or leave it out")
            continue
        if mv is not None and mv.value == "sampled":
            # Code that cannot be patched (C functions, third-party internals): reported from
            # the sampled profiles whenever a profiled function's name matches the pattern.
            out.append(WatchTarget(target=target, where=chk.loc(tv), mode="sampled"))
            continue
        mod, colon, qual = target.partition(":")
        if not colon or not _MODULE.match(mod) or not _QUALNAME.match(qual):
            chk.add(tv, f"{key}.target", f"{_show(target)} is not of the form 'module.path:Qualified.name'",
                    "write e.g. 'myapp.storage:Storage.get_user' or a glob like 'myapp.storage:*.get_*'")
            continue
        name = chk.string(m, key, "name", None, pattern=SAFE_NAME,
                          fix="use letters, digits, '_' and '-', e.g. name: get_user")
        group = chk.string(m, key, "group", None, pattern=SAFE_NAME,
                           fix="use letters, digits, '_' and '-', e.g. group: db")
        wt = WatchTarget(target=target, name=name, group=group, where=chk.loc(tv),
                         mode="count" if mv is not None and mv.value == "count" else "wrap")
        if name is not None and wt.is_glob:
            chk.add(m["name"], f"{key}.name", "'name' cannot be used with a glob target (it matches many functions)",
                    "remove 'name', or list the functions one by one")
            continue
        out.append(wt)
    return tuple(out)


def _preset(chk: _Checker, m: dict[str, _V], key: str) -> WatchTarget | None:
    pv = m["preset"]
    if pv.value not in PRESET_NAMES:
        close = difflib.get_close_matches(str(pv.value), PRESET_NAMES, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "use one of " + ", ".join(PRESET_NAMES)
        chk.add(pv, f"{key}.preset", f"unknown preset {_show(pv.value)}", hint)
        return None
    for other in ("target", "name"):
        if other in m:
            chk.add(m[other], f"{key}.{other}", f"'{other}' cannot be used with 'preset'",
                    "give the preset alone (and optionally its group), or a target")
            return None
    group = chk.string(m, key, "group", None, pattern=SAFE_NAME,
                       fix="use letters, digits, '_' and '-', e.g. group: db")
    return WatchTarget(target="", group=group, where=chk.loc(pv), preset=str(pv.value))


def _apply_env(cfg: Config, env: Mapping[str, str]) -> Config:
    problems: list[Problem] = []
    enabled = cfg.enabled
    raw = env.get(ENV_DISABLED)
    if raw is not None:
        val = raw.strip().lower()
        if val in _TRUE:
            enabled = False
        elif val not in _FALSE:
            problems.append(Problem(f"environment variable {ENV_DISABLED}", "", f"{raw!r} is not a switch",
                                    f"set {ENV_DISABLED}=1 to turn callwatch off, or unset it"))
    graphite = cfg.graphite
    raw = env.get(ENV_GRAPHITE)
    if raw is not None and raw.strip():
        host, port = _host_port(raw.strip(), graphite.port)
        if host is None or port is None:
            problems.append(Problem(f"environment variable {ENV_GRAPHITE}", "", f"{raw!r} is not HOST[:PORT]",
                                    f"set e.g. {ENV_GRAPHITE}=127.0.0.1:2003"))
        else:
            graphite = dataclasses.replace(graphite, host=host, port=port)
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(cfg, enabled=enabled, graphite=graphite)


def _host_port(s: str, default_port: int) -> tuple[str | None, int | None]:
    if s.startswith("["):  # [::1]:2003
        host, _, rest = s[1:].partition("]")
        port_s = rest[1:] if rest.startswith(":") else ""
    elif s.count(":") == 1:
        host, _, port_s = s.partition(":")
    else:
        host, port_s = s, ""
    if not host:
        return None, None
    if not port_s:
        return host, default_port
    if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        return host, None
    return host, int(port_s)


def parse_host_port(s: str, default_port: int = 2003) -> tuple[str, int]:
    """``"host:port"`` -> (host, port); raises ValueError with a readable message."""
    host, port = _host_port(s, default_port)
    if host is None or port is None:
        raise ValueError(f"{s!r} is not HOST[:PORT], e.g. 127.0.0.1:2003")
    return host, port


def short_hostname() -> str:
    name = socket.gethostname().split(".")[0]
    return re.sub(r"[^A-Za-z0-9_-]", "_", name) or "localhost"
