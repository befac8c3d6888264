"""The configuration's schema and values: every key declared once, in file order.

Each section is a frozen dataclass; each field that is a YAML key carries its
:class:`Key` (help text, fix hint, kind and range) in ``field(metadata=...)``, beside its
one default.  Validation (``_check``), the example file and the reference page
(``_docs``) all read these declarations, so a key cannot be documented, defaulted and
checked three different ways.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping


#: What a metric-name component may contain (everything else is replaced by ``_``).
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
PREFIX = re.compile(r"^$|^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
QUALNAME = re.compile(r"^[A-Za-z0-9_*?\[\]!]+(\.[A-Za-z0-9_*?\[\]!]+)*$")
PERIOD = re.compile(r"^\d+(s|min|h|d)$")
URL = re.compile(r"^https?://\S+$")

#: callwatch.presets.PRESETS, named here so that config imports nothing of callwatch's.
PRESET_NAMES = ("redis", "dbapi", "sqlalchemy", "requests", "httpx")

#: At most this many functions watched in all: each one adds series per handler and work
#: per flush, so a glob that matches a whole package is a mistake, not a wish.
MAX_WATCHED = 1000


_NO_EXAMPLE = object()


@dataclass(frozen=True)
class Key:
    """How one YAML key is read, checked and documented.

    ``kind``: bool, int (``lo``..``hi``), number (> 0), fraction (0..1), seconds (>= 0),
    str (``pattern``, ``max_len``), choice (``choices``), host, or custom (read by a
    function of ``_build``, documented like the rest).
    """

    help: str
    kind: str
    fix: str = ""
    lo: int = 0
    hi: int | None = None
    pattern: re.Pattern[str] | None = None
    choices: tuple[str, ...] = ()
    nullable: bool = False
    max_len: int = 200
    example: Any = _NO_EXAMPLE  # the value the example file shows, when not the default
    example_yaml: str = ""  # or a YAML block, for lists and mappings
    inline_help: bool = False  # the example file puts the help after the value


def key(default: Any, help: str, kind: str, **kw: Any) -> Any:
    """A dataclass field that is a YAML key (``default`` is its one default)."""
    meta = {"key": Key(help, kind, **kw)}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


def has_example(k: Key) -> bool:
    return k.example is not _NO_EXAMPLE


_HOST_HELP = ("carbon's plaintext receiver: a host name or IP address (IPv6 with or without "
              "brackets). null (the default): send nothing; the metrics are still aggregated "
              "in-process (callwatch demo, on_snapshot callbacks). Overridden by "
              "CALLWATCH_GRAPHITE=HOST:PORT ([::1]:2003 for IPv6).")


@dataclass(frozen=True)
class GraphiteConfig:
    """Where and how the metrics are sent."""

    host: str | None = key(None, _HOST_HELP, "host", nullable=True, max_len=253, example="127.0.0.1",
                           fix="give a host name or IP address, e.g. host: 127.0.0.1 (null: send nothing)")
    port: int = key(2003, "carbon's plaintext port (the line receiver), 1-65535.", "int", lo=1, hi=65535,
                    fix="use carbon's plaintext port, e.g. port: 2003")
    protocol: str = key("tcp", "tcp (a batch counts as sent once carbon has read it) or udp (fire and forget).",
                        "choice", choices=("tcp", "udp"), fix="write 'protocol: tcp' (or udp)")
    prefix: str = key("callwatch", "first part of every metric name; dots allowed, \"\" for none.", "str",
                      pattern=PREFIX, max_len=200,
                      fix="use letters, digits, '_' and '-', with '.' between parts, e.g. prefix: myapp.callwatch")
    interval: int = key(10, "seconds between flushes, a whole number >= 1. Flushes happen at wall-clock "
                        "multiples of it (:00, :10, :20 ...), so points line up with carbon's retention "
                        "buckets. Use the finest retention of your storage-schemas.conf.", "int", lo=1, hi=86400,
                        fix="give whole seconds, at least 1 (Graphite stores one point per second at most), "
                            "e.g. interval: 10")
    tags: bool = key(False, "false: hierarchical names (prefix.host.handler.login.requests). true: Graphite "
                     "1.1 tagged series (prefix.requests;handler=login;host=web1).", "bool")
    timeout: float = key(2.0, "seconds to wait for carbon on each send; left out: 2, or half the interval "
                         "if that is shorter. Must be less than the interval.", "number",
                         fix="give seconds, e.g. timeout: 2.0")
    max_buffered_points: int = key(100_000, "points kept while carbon is unreachable (then the oldest are "
                                   "dropped and counted in the points_dropped self-metric).", "int", lo=0,
                                   fix="give a count of points, e.g. max_buffered_points: 100000")
    web_url: str | None = key(None, "graphite-web, where callwatch posts a Graphite event when it sees a spike "
                              "(Grafana annotations show them). null: no events.", "str", nullable=True,
                              pattern=URL, max_len=2000,
                              fix="give graphite-web's URL, e.g. web_url: http://127.0.0.1:8080")


@dataclass(frozen=True)
class NamingConfig:
    """``naming:``, the schema of Config.host / worker / slot_dir."""

    host: str = key("auto", "the host part of metric names: auto (the short host name), a name of your own, "
                    "or \"\" to leave it out (when something else already tells hosts apart).", "str",
                    pattern=re.compile(r"^$|^[A-Za-z0-9_.-]+$"), max_len=100,
                    fix="use letters, digits, '_', '-' (dots become '_'), 'auto' for the short host name, "
                        "or \"\" to leave the host out")
    worker: str = key("auto", "auto: each process sends under its own worker slot (web1_w0, web1_w1 ...), the "
                      "lowest free number among lock files in slot_dir, so gunicorn workers never overwrite "
                      "each other's points and restarted workers reuse numbers. none: no worker part.", "choice",
                      choices=("auto", "none"),
                      fix="write 'worker: auto' (each process sends under its own slot, e.g. web1_w0) or "
                          "'worker: none' (one process per host and prefix)")
    slot_dir: str | None = key(None, "where the slots' lock files live (a private directory; null: "
                               "$TMPDIR/callwatch-slots-<uid>).", "str", nullable=True, max_len=4096,
                               fix="give a directory path, e.g. slot_dir: /run/myapp/callwatch")


@dataclass(frozen=True)
class WatchTarget:
    """One ``watch:`` entry (a string alone is its ``target``)."""

    target: str = key("", "\"module.path:Qualified.name\" (a function, a method, a staticmethod or "
                      "classmethod, a method of a nested class), or a glob over the module's names "
                      "(\"myapp.storage:*.get_*\"; '*' does not match names that start with '_').", "custom",
                      max_len=1000)
    name: str | None = key(None, "the metric name (default: the qualified name with dots as '_'); not with "
                           "a glob.", "str", nullable=True, pattern=SAFE_NAME, max_len=100,
                           fix="use letters, digits, '_' and '-', e.g. name: get_user")
    group: str | None = key(None, "db, redis, http...: each group also gets totals per request.", "str",
                            nullable=True, pattern=SAFE_NAME, max_len=100,
                            fix="use letters, digits, '_' and '-', e.g. group: db")
    where: str = "<config>"
    preset: str | None = key(None, "instead of a target, the usual functions of a library: "
                             + ", ".join(PRESET_NAMES) + " (see callwatch.presets).", "custom")
    mode: str = key("wrap", "wrap (count and time), count (calls only; on Python 3.12+ through "
                    "sys.monitoring, which counts every reference to the function, even ones taken before "
                    "configure, but costs more per call than the C wrapper in a server: "
                    "benchmarks/features.py), or sampled (the target is a pattern over profiled functions' names, "
                    "reported from the sampled profiles; needs the profile section).", "choice",
                    choices=("wrap", "count", "sampled"),
                    fix="write 'mode: count' (calls only), 'mode: sampled' (a "
                        "pattern over profiled functions), or leave it out")

    @property
    def module(self) -> str:
        """The module part of ``target`` (before the ``:``)."""
        return self.target.partition(":")[0]

    @property
    def qualname(self) -> str:
        """The name part of ``target`` (after the ``:``): a qualified name, or a glob."""
        return self.target.partition(":")[2]

    @property
    def is_glob(self) -> bool:
        """Whether ``qualname`` is a glob over the module's names (``*``, ``?``, ``[``)."""
        return any(ch in self.qualname for ch in "*?[")


@dataclass(frozen=True)
class HandlersConfig:
    """Handler names: renames, caps, and dimensions computed by functions of yours."""

    rename: Mapping[str, str] = key({}, "handler names to report under another name (\"old name\": new_name).",
                                    "custom", example_yaml='"GET /users/<id>": users_show',
                                    fix="write e.g. 'rename: {\"GET /users/<id>\": users_show}'")
    max_handlers: int = key(200, "at most this many distinct handler names; requests of further names are "
                            "counted under \"_other\", so a route with ids in its name cannot create endless "
                            "series.", "int", lo=1, fix="give a count, e.g. max_handlers: 200")
    max_dimension_values: int = key(20, "at most this many values per handler and dimension "
                                    "(callwatch.dimension(\"players\", 7)); further values count under "
                                    "\"_other\".", "int", lo=1, fix="give a count, e.g. max_dimension_values: 20")
    #: handler -> {dimension: WatchTarget naming the function that computes it}
    dimensions: Mapping[str, Mapping[str, WatchTarget]] = key(
        {}, "dimensions computed by a function of yours, per handler: it gets the handler's own arguments "
        "(decorated handlers, routers) or the framework's request (WSGI environ, ASGI scope, Django "
        "HttpRequest) and returns the value.", "custom",
        example_yaml="deal: {}   # e.g. {players: \"myapp.dims:players_at_table\"}",
        fix="write e.g. 'dimensions: {deal: {players: \"myapp.dims:players_at_table\"}}'")


@dataclass(frozen=True)
class ProfileConfig:
    """``profile:``: sampled full profiles of requests (absent: off, at no cost)."""

    rate: float = key(0.01, "at most this fraction of requests fully profiled (one at a time per process); "
                      "the budget usually allows fewer.", "fraction",
                      fix="write e.g. 'rate: 0.01' (1 %)")
    min_interval: float = key(60.0, "seconds: a handler not profiled for this long gets its next request "
                              "profiled, so rare handlers show up too (0: off).", "seconds",
                              fix="write e.g. 'min_interval: 60' (0 turns it off)")
    budget: float = key(0.002, "at most this fraction of the process's CPU time spent on profiling; "
                        "callwatch lowers the rate and refuses picks past it. The default leaves room for "
                        "the rest of callwatch within a 1-percent total (benchmarks/macro.py); under gevent "
                        "or asyncio, where a profiled request delays the ones queued behind it, the share "
                        "of requests it delays grows with the budget (benchmarks/latency.py).", "fraction",
                        fix="write e.g. 'budget: 0.01' (1 %)")
    top: int = key(10, "functions per handler pushed as metrics (handler.<h>.profile.<function>...).", "int",
                   lo=1, hi=1000, fix="give a count, e.g. top: 10")
    dump_dir: str | None = key(None, "where pstats dumps of profiled requests go "
                               "(<handler>/<UTC time>-<ms>ms.prof); it must be a writable directory, or one "
                               "that can be made. null: no dumps.", "custom", nullable=True, max_len=4096,
                               fix="give a directory, e.g. dump_dir: /var/tmp/callwatch-profiles")
    slow_ms: float | None = key(None, "dump profiled requests slower than this (ms), or null.", "number",
                                nullable=True, fix="give milliseconds, e.g. slow_ms: 500")
    call_budget: Mapping[str, int] = key({}, "dump profiled requests that called a watched function (by its "
                                         "metric name) more often than this.", "custom",
                                         example_yaml="{}   # e.g. {get_db_user: 5}",
                                         fix="write e.g. 'call_budget: {get_db_user: 5}'")
    keep_per_handler: int = key(20, "newest dumps kept per handler.", "int", lo=1,
                                fix="give a count, e.g. keep_per_handler: 20")
    max_dump_mb: float = key(100.0, "megabytes of all dumps together.", "number",
                             fix="give megabytes, e.g. max_dump_mb: 100")
    trigger_file: str | None = key(None, "a file to write \"HANDLER SECONDS\" into: every request of HANDLER "
                                   "is profiled for SECONDS (read and removed at the next flush). null: none.",
                                   "str", nullable=True, max_len=4096,
                                   fix="give a file path, e.g. trigger_file: /tmp/callwatch-profile-now")


@dataclass(frozen=True)
class MemoryConfig:
    """``memory:``: GC pauses and the process's memory beside the response times (absent: off)."""

    gc: bool = key(True, "garbage collections: per process and generation, collections, pause ms (total and "
                   "max), objects collected and uncollectable; per handler, the collections and GC ms of its "
                   "requests (handler.<h>.gc...). false: no gc.callbacks hook.", "bool")
    process: bool = key(True, "the process's memory at each flush: RSS, USS and PSS (MB, from /proc), and the "
                        "blocks Python's allocator holds (process.memory...). false: not read.", "bool")
    census_every: int = key(30, "an object census every this many flushes (0: none; 30 is every 5 minutes at "
                            "the default interval): the objects the GC tracks, counted by type; the top types' "
                            "counts and growth are sent (process.memory.types.<type>...). It costs about 0.13 s "
                            "of CPU per million objects (benchmarks/memory.py).", "int", lo=0, hi=1_000_000,
                            fix="give a count of flushes, e.g. census_every: 30 (0 turns it off)")
    top: int = key(10, "types per census sent by count (a type that grows at every census is sent too).", "int",
                   lo=1, hi=1000, fix="give a count, e.g. top: 10")
    hunt_dir: str | None = key(None, "where leak hunts write their results; a hunt starts when a file 'start' "
                               "(every process) or 'start.<pid>' (one process) appears there, holding the "
                               "seconds to hunt (default 60): what grew, objgraph's chain to what holds it, "
                               "tracemalloc's growing allocation sites. Read them with callwatch leaks DIR. null: "
                               "no hunts.", "custom", nullable=True, max_len=4096,
                               fix="give a directory, e.g. hunt_dir: /var/tmp/callwatch-leaks")
    leak_window: int = key(5, "a type whose count reaches a new high at this many censuses in a row is a leak "
                           "suspect (process.memory.types.<type>.suspect); judged once twice that many censuses "
                           "were taken.", "int", lo=2, hi=1000, fix="give a count of censuses, e.g. leak_window: 5")


@dataclass(frozen=True)
class SpikesConfig:
    """In-process spike detection (on by default): calls per request against a baseline."""

    enabled: bool = key(True, "false: no spike detection.", "bool")
    factor: float = key(2.0, "calls per request at least this many times the baseline...", "number",
                        fix="give a factor above 1, e.g. factor: 2", inline_help=True)
    floor: float = key(3.0, "...and at least this many calls per request", "number",
                       fix="give calls per request, e.g. floor: 3", inline_help=True)
    baseline_intervals: int = key(30, "the baseline: the median of this many recent intervals", "int", lo=3,
                                  hi=100_000, fix="give a count of intervals, e.g. baseline_intervals: 30",
                                  inline_help=True)
    min_requests: int = key(5, "intervals with fewer requests of the handler are not judged", "int", lo=1,
                            fix="give a count, e.g. min_requests: 5", inline_help=True)


@dataclass(frozen=True)
class AlertsConfig:
    """Rules for ``callwatch alerts check`` and the generated Grafana alert rules."""

    window: str = key("10min", "the recent period judged", "str", pattern=PERIOD, max_len=20,
                      fix="give a Graphite period, e.g. window: 10min", inline_help=True)
    baseline: str = key("1h", "spikes: against the median over this period before the window", "str",
                        pattern=PERIOD, max_len=20, fix="give a Graphite period, e.g. baseline: 1h",
                        inline_help=True)
    spike_warning: float = key(2.0, "calls per request x baseline for WARNING...", "number",
                               fix="give a factor, e.g. 2", inline_help=True)
    spike_critical: float = key(4.0, "...and for CRITICAL", "number", fix="give a factor, e.g. 4",
                                inline_help=True)
    spike_floor: float = key(3.0, "no spike below this many calls per request", "number",
                             fix="give calls per request, e.g. 3", inline_help=True)
    p99_warning_ms: float = key(500.0, "p99 response time (ms) for WARNING", "number", fix="give ms, e.g. 500",
                                inline_help=True)
    p99_critical_ms: float = key(2000.0, "...and for CRITICAL", "number", fix="give ms, e.g. 2000",
                                 inline_help=True)
    no_data_minutes: float = key(5.0, "no requests at all for this long: CRITICAL", "number",
                                 fix="give minutes, e.g. 5", inline_help=True)
    webhook: str | None = key(None, "a URL the check POSTs its JSON result to when not OK", "str", nullable=True,
                              pattern=URL, max_len=2000, fix="give a URL, e.g. webhook: https://hooks.example/alerts",
                              inline_help=True)


_N = NamingConfig()


@dataclass(frozen=True)
class Config:
    """A whole configuration, checked (:func:`load`): the sections, and ``naming:``
    resolved into ``host``, ``worker`` and ``slot_dir``."""

    enabled: bool = key(True, "false: callwatch does nothing (same as CALLWATCH_DISABLED=1 in the "
                        "environment).", "bool")
    graphite: GraphiteConfig = GraphiteConfig()
    host: str = ""  # naming.host, resolved ("" = left out of metric names)
    worker: str = _N.worker  # naming.worker
    slot_dir: str | None = _N.slot_dir  # naming.slot_dir
    watch: tuple[WatchTarget, ...] = ()
    handlers: HandlersConfig = HandlersConfig()
    profile: ProfileConfig | None = None
    memory: MemoryConfig | None = None
    spikes: SpikesConfig = SpikesConfig()
    alerts: AlertsConfig = AlertsConfig()
    source: str = "<defaults>"
    #: "file:line" of keys whose later checks need a location (e.g. "profile.call_budget.f")
    where: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Section:
    """A top-level entry of the file, in file order."""

    name: str
    help: str
    cls: type | None = None  # a section of keys; None: a key of Config (enabled) or the watch list


SECTIONS = (
    Section("enabled", ""),
    Section("graphite", "", GraphiteConfig),
    Section("naming", "How metric names tell hosts and worker processes apart.", NamingConfig),
    Section("watch", "Functions to count and time per request. Each entry is a target string, or a mapping "
            "of the keys below; at most " + f"{MAX_WATCHED:,}" + " functions in all (a glob counts every "
            "function it matches)."),
    Section("handlers", "", HandlersConfig),
    Section("profile", "Sampled full profiles of requests (needs: pip install 'callwatch[profile]', i.e. "
            "yappi and gprof2dot). Leave the whole section out to turn profiling off at no cost.",
            ProfileConfig),
    Section("memory", "Garbage-collector pauses and the process's memory, per interval, beside the response "
            "times: write 'memory: {}' for the defaults. Leave the whole section out to turn it off at no cost.",
            MemoryConfig),
    Section("spikes", "In-process spike detection, on by default: at each flush, each handler x watched "
            "function's calls per request against the median of its own recent intervals. A spike logs one "
            "warning, sends handler.<h>.watch.<f>.spike (the ratio) and, with graphite.web_url, posts a "
            "Graphite event. Nothing repeats while the spike lasts.", SpikesConfig),
    Section("alerts", "Rules for `callwatch alerts check` and the generated Grafana alert rules.", AlertsConfig),
)
