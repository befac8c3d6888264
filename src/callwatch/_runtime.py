"""configure() and shutdown(): wiring config, patching, collector and exporter together."""

from __future__ import annotations

import atexit
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from pathlib import Path

from . import _core, _request, _slots, _targets
from .aggregate import Snapshot, snapshot_from_json, snapshot_to_json
from .config import Config, ConfigError, Problem, load
from .export import Clock, Exporter, GraphyteSender, Namer, SnapshotSink, SystemClock

log = logging.getLogger("callwatch")


@dataclass
class Runtime:
    """The active configuration: what is patched and the exporter that flushes."""

    config: Config
    exporter: Exporter
    patches: _targets.Patches
    resolved: list[_targets.Resolved | _targets.PresetUse] = field(default_factory=list)
    slot: _slots.Slot | None = None

    @property
    def worker(self) -> str:
        """This process's worker slot name (``w0``...), or "" with ``naming.worker: none``."""
        return f"w{self.slot.number}" if self.slot is not None and self.slot.number >= 0 else ""

    def flush(self) -> Snapshot | None:
        return self.exporter.flush()


_lock = threading.RLock()
_active: Runtime | None = None
# What the last shutdown() sent for the interval it was in.  If configure() is called
# again in that same interval, the counts go back into the table, so the next flush sends
# the whole interval again instead of overwriting it with only the later part.
_last_partial: Snapshot | None = None


def configure(source: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None, *,
              sender: Any | None = None, clock: Clock | None = None,
              on_snapshot: SnapshotSink | Iterable[SnapshotSink] | None = None,
              start_thread: bool = True, strict: bool = False) -> Runtime | None:
    with _lock:
        try:
            cfg = load(source)
            resolved: list[_targets.Resolved | _targets.PresetUse] = []
            dims: dict[str, list[tuple[str, Any]]] = {}
            if cfg.enabled:
                resolved, problems = _targets.resolve(cfg.watch)
                dims, more = _targets.resolve_dimensions(cfg.handlers.dimensions)
                if cfg.profile is not None:
                    more += _profile_problems(cfg)
                if problems or more:
                    raise ConfigError(problems + more)
            shutdown()
            if not cfg.enabled:
                return None
            rt = _start(cfg, resolved, sender, clock, on_snapshot, start_thread)
            _request.dimension_functions = dims
            return rt
        except ConfigError as e:
            if strict:
                raise
            log.error("callwatch: configuration not used, callwatch stays off:\n%s", e)
            return None


def _start(cfg: Config, resolved: list[_targets.Resolved | _targets.PresetUse], sender: Any | None, clock: Clock | None,
           on_snapshot: SnapshotSink | Iterable[SnapshotSink] | None, start_thread: bool) -> Runtime:
    global _active, _last_partial
    clock = clock or SystemClock()
    g = cfg.graphite
    if sender is None and g.host:
        sender = GraphyteSender(g.host, g.port, protocol=g.protocol, timeout=g.timeout)
    sinks: list[SnapshotSink] = []
    if cfg.spikes.enabled:  # first, so that later sinks see snap.spikes
        from .spikes import SpikeDetector

        sinks.append(SpikeDetector(cfg.spikes, g.web_url))
    if callable(on_snapshot):
        sinks.append(on_snapshot)
    elif on_snapshot is not None:
        sinks.extend(on_snapshot)

    patches = _targets.patch(resolved)

    collector = _core.collector
    collector.max_handlers = cfg.handlers.max_handlers
    collector.max_dimension_values = cfg.handlers.max_dimension_values
    slot = _claim_slot(cfg)
    aligned = math.floor(clock.time() / g.interval) * g.interval
    partial = _last_partial if slot is None else _handoff(slot)
    if partial is not None and partial.start == aligned:
        collector.restore(partial)
    elif collector.start is None or collector.start < aligned:
        collector.set_start(aligned)
    _last_partial = None

    where = f"Graphite at {g.host}:{g.port} ({g.protocol})" if g.host else "the configured sender"
    exporter = Exporter(collector, Namer.from_config(cfg), sender, interval=g.interval, clock=clock,
                        max_buffered_points=g.max_buffered_points, sinks=sinks, where=where)
    rt = Runtime(cfg, exporter, patches, resolved, slot)
    exporter.namer = Namer.from_config(cfg, rt.worker)
    if cfg.profile is not None:
        _request.profiler = _make_profiler(cfg, collector, exporter)
    _active = rt
    if start_thread:
        exporter.start()
    atexit.register(_at_exit)
    return rt


def _profile_problems(cfg: Config) -> list[Problem]:
    try:
        import yappi  # noqa: F401
    except ImportError:
        return [Problem(cfg.source, "profile", "profiling needs the 'yappi' package, which is not installed",
                        "pip install 'callwatch[profile]', or remove the profile section")]
    return []


def _make_profiler(cfg: Config, collector: Any, exporter: Exporter) -> Any:
    from .profiling import ProfiledRequest, Profiler

    assert cfg.profile is not None
    collector.profile_top = cfg.profile.top
    collector.profile_patterns = tuple(w.target for w in cfg.watch if w.mode == "sampled")
    registry = _core.registry

    def sink(req: ProfiledRequest) -> None:
        collector.record_profile(req.handler, req.elapsed_ns,
                                 [(r.label, r.calls, r.own_ns, r.cum_ns) for r in req.rows])

    def watched_calls(state: list[Any]) -> dict[str, int]:
        entries = registry.entries
        return {entries[k].name: state[3 * k] for k in range(1, min(len(entries), len(state) // 3))
                if state[3 * k]}

    profiler = Profiler(cfg.profile, sink, watched_calls)
    exporter.hooks.append(profiler.on_flush)
    return profiler


def _claim_slot(cfg: Config) -> _slots.Slot | None:
    if cfg.worker == "none":
        return None
    directory = Path(cfg.slot_dir) if cfg.slot_dir else _slots.default_dir()
    slot = _slots.Slot(directory, f"{cfg.graphite.prefix}.{cfg.host}")
    try:
        slot.claim()
    except (OSError, _slots.SlotError) as e:
        log.warning("callwatch: cannot take a worker slot in %s (%s); metric names get no worker "
                    "part, so several processes would overwrite each other's points", directory, e)
        return None
    return slot


def _handoff(slot: _slots.Slot) -> Snapshot | None:
    data = slot.take_handoff()
    if data is None:
        return None
    try:
        return snapshot_from_json(data, _core.registry)
    except (KeyError, TypeError, ValueError) as e:
        log.warning("callwatch: ignoring a malformed hand-off in %s (%s)", slot.path, e)
        return None


def shutdown(timeout: float = 5.0) -> None:
    """Final flush, stop the flush thread, and undo every patch ``configure()`` made."""
    global _active, _last_partial
    with _lock:
        rt = _active
        if rt is None:
            return
        _active = None
        atexit.unregister(_at_exit)
        try:
            final = rt.exporter.stop(timeout)
            if rt.slot is None:
                _last_partial = final
            elif final is not None:
                rt.slot.leave_handoff(snapshot_to_json(final))
        except Exception:
            log.exception("callwatch: final flush failed")
        finally:
            if rt.slot is not None:
                rt.slot.release()
            rt.patches.undo()
            _request.dimension_functions = {}
            _request.profiler = None


def _at_exit() -> None:
    shutdown()


def flush() -> Snapshot | None:
    """Flush now if an interval has ended (for scripts and tests); no-op when not configured."""
    rt = _active
    return rt.exporter.flush() if rt is not None else None


def active() -> Runtime | None:
    return _active


def _after_fork_in_child() -> None:
    # The parent may have been inside record() or a flush when it forked: every lock is
    # replaced, the parent's counts are dropped (the parent reports them), and the flush
    # thread is started again, so nothing is counted twice and nothing waits forever.
    global _lock, _last_partial
    _lock = threading.RLock()
    _last_partial = None
    _core.registry.after_fork_in_child()
    _core.collector.after_fork_in_child()
    if _request.profiler is not None:
        _request.profiler.after_fork_in_child()
    rt = _active
    if rt is not None:
        try:
            if rt.slot is not None:
                rt.slot.forget_after_fork()
                try:
                    rt.slot.claim()
                except (OSError, _slots.SlotError) as e:
                    log.warning("callwatch: no worker slot after fork (%s); sending without one", e)
                rt.exporter.namer = Namer.from_config(rt.config, rt.worker)
                exp = rt.exporter
                aligned = math.floor(exp.clock.time() / exp.interval) * exp.interval
                _core.collector.set_start(aligned)
                partial = _handoff(rt.slot)
                if partial is not None and partial.start == aligned:
                    _core.collector.restore(partial)
            rt.exporter.after_fork_in_child()
        except Exception:
            log.exception("callwatch: could not set up the forked child")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
