"""configure() and shutdown(): wiring config, patching, collector and exporter together.

``configure()`` never raises into the host, except :class:`ConfigError` with
``strict=True``: a bad configuration is logged as one located message, and anything
unexpected on the way (a bug, a module that misbehaves) is logged with its traceback;
either way whatever was half started is undone and callwatch stays off.

Requests still running when ``shutdown()`` sends the last partial interval are added to
the collector when they finish; a later ``configure()`` in the same process sends them
with its first interval (same interval: merged with the partial one that was sent).  At
process exit they are lost: nothing sends after the final flush.

The final flush runs at interpreter exit (``atexit``) and, in a process that
multiprocessing ends with ``os._exit()``, from multiprocessing's own exit hooks
(``_mpexit``); docs/processes.md says what each way of ending a process sends.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from . import _core, _mpexit, _patching, _request, _slots, _state, _targets
from .aggregate import Collector, Snapshot, snapshot_from_json, snapshot_to_json
from .config import Config, ConfigError, Problem, prepare
from .export import Clock, Exporter, GraphyteSender, Namer, Sender, SnapshotSink

if TYPE_CHECKING:
    from .config import Prepared
    from .memory import GcMeter
    from .profiling import Profiler
    from .spikes import SpikeDetector

log = logging.getLogger("callwatch")


@dataclass
class Runtime:
    """The active configuration: what is patched and the exporter that flushes."""

    config: Config
    exporter: Exporter
    patches: _patching.Patches
    resolved: list[_targets.Resolved | _targets.PresetUse] = field(default_factory=list)
    slot: _slots.WorkerSlot | None = None
    #: the in-process spike detector (a stage of the exporter), when spikes are enabled
    spikes: SpikeDetector | None = None
    #: the gc.callbacks hook, with ``memory.gc``
    gc_meter: GcMeter | None = None

    @property
    def worker(self) -> str:
        """This process's worker name in metric paths: ``w0``... from a slot, ``p3`` when no
        slot could be taken, or "" with ``naming.worker: none``."""
        return self.slot.name if self.slot is not None else ""

    def flush(self) -> Snapshot | None:
        """Flush now if an interval has ended; returns the snapshot swapped out, if any."""
        return self.exporter.flush()


_lock = threading.RLock()
_active: Runtime | None = None
# (worker name, what the last shutdown() sent for the interval it was in).  If configure()
# is called again in that interval under the same name, the counts go back into the table,
# so the next flush sends the whole interval again instead of overwriting it with only the
# later part.  (A slot file carries the same across processes; see _slots.)
_last_partial: tuple[str, Snapshot] | None = None
_fallback_warned = False


def configure(source: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None, *,
              sender: Sender | None = None, clock: Clock | None = None,
              on_snapshot: SnapshotSink | Iterable[SnapshotSink] | None = None,
              start_thread: bool = True, strict: bool = False) -> Runtime | None:
    """Apply a configuration: patch its watch targets and start flushing (see the README).

    ``callwatch.configure("callwatch.yaml")``; calling it again replaces the previous
    configuration.  Returns the :class:`Runtime`, or None when callwatch stays off.
    """
    with _lock:
        try:
            prepared = prepare(source)
            shutdown()
            if not prepared.config.enabled:
                return None
            return _start(prepared, sender, clock, _sinks(on_snapshot), start_thread)
        except ConfigError as e:
            if strict:
                raise
            log.error("callwatch: configuration not used, callwatch stays off:\n%s", e)
        except (Exception, SystemExit) as e:
            log.exception("callwatch: could not start, callwatch stays off")
            if strict:
                raise ConfigError([Problem(_where(source), "", f"callwatch could not start ({type(e).__name__}: {e})",
                                           "the log has the traceback; please report it")]) from e
        return None


def _where(source: object) -> str:
    """The source as config problems name it."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Config):
        return source.source
    return "<dict>" if isinstance(source, Mapping) else "<configuration>"


def _sinks(on_snapshot: SnapshotSink | Iterable[SnapshotSink] | None) -> list[SnapshotSink]:
    if on_snapshot is None:
        return []
    return [on_snapshot] if callable(on_snapshot) else list(on_snapshot)


def _start(prepared: Prepared, sender: Sender | None, clock: Clock | None, sinks: list[SnapshotSink],
           start_thread: bool) -> Runtime:
    global _active
    cfg = prepared.config
    g = cfg.graphite
    if sender is None and g.host:
        sender = GraphyteSender(g.host, g.port, protocol=g.protocol, timeout=g.timeout)
    spikes = _spike_detector(cfg)
    where = f"Graphite at {g.host}:{g.port} ({g.protocol})" if g.host else "the configured sender"
    slot = _claim_slot(cfg)
    patches = _patching.patch(prepared.resolved)
    gc_meter = None
    try:
        collector = _core.collector
        collector.max_handlers = cfg.handlers.max_handlers
        collector.max_dimension_values = cfg.handlers.max_dimension_values
        exporter = Exporter(collector, Namer.from_config(cfg, slot.name if slot else ""), sender,
                            interval=g.interval, clock=clock, max_buffered_points=g.max_buffered_points,
                            stages=[spikes] if spikes is not None else [], sinks=sinks, where=where)
        rt = Runtime(cfg, exporter, patches, prepared.resolved, slot, spikes)
        _start_interval(rt)
        if cfg.profile is not None:
            profiler = _make_profiler(cfg, collector, exporter)
            _request.profiler, _request.profiler_skip = profiler, profiler.skip
        _request.dimension_functions = prepared.dimensions
        if cfg.memory is not None:
            rt.gc_meter = gc_meter = _start_memory(cfg, collector, exporter)
    except BaseException:
        if gc_meter is not None:
            gc_meter.uninstall()
        _request.profiler = None
        _request.dimension_functions = {}
        patches.undo()
        if slot is not None:
            slot.release()
        raise
    _active = rt
    if start_thread:
        exporter.start()
    atexit.register(_at_exit)
    _exit_hook.arm()  # multiprocessing children end with os._exit(): atexit never runs there
    return rt


def _start_memory(cfg: Config, collector: Collector, exporter: Exporter) -> GcMeter | None:
    from .memory import Census, GcMeter, MemoryGauges

    m = cfg.memory
    assert m is not None
    if m.process:
        exporter.stages.append(MemoryGauges())
    if m.census_every:
        exporter.stages.append(Census(m.census_every, m.top, m.leak_window, web_url=cfg.graphite.web_url))
    if m.hunt_dir:
        from ._leakhunt import LeakHunt

        exporter.stages.append(LeakHunt(m.hunt_dir))
    if not m.gc:
        return None
    meter = GcMeter(_core.registry, collector)
    meter.install()
    return meter


def _spike_detector(cfg: Config) -> SpikeDetector | None:
    if not cfg.spikes.enabled:
        return None
    from .spikes import SpikeDetector

    return SpikeDetector(cfg.spikes, cfg.graphite.web_url)


def _start_interval(rt: Runtime) -> None:
    """Start the collector's interval at the current multiple, merging back the partial
    interval this worker name already sent for it (a hand-off, or our own last shutdown)."""
    global _last_partial
    collector = rt.exporter.collector
    aligned = rt.exporter.flush_clock.aligned()
    partial = _handoff(rt.slot) if rt.slot is not None else None
    if partial is None and _last_partial is not None and _last_partial[0] == rt.worker:
        partial = _last_partial[1]
    if partial is not None and partial.start == aligned:
        collector.restore(partial)
    elif collector.start is None or collector.start < aligned:
        collector.set_start(aligned)
    _last_partial = None


def _make_profiler(cfg: Config, collector: Collector, exporter: Exporter) -> Profiler:
    from .profiling import ProfiledRequest, Profiler

    assert cfg.profile is not None
    collector.profile_top = cfg.profile.top
    collector.profile_patterns = tuple(w.target for w in cfg.watch if w.mode == "sampled")
    registry = _core.registry

    def sink(req: ProfiledRequest) -> None:
        collector.record_profile(req.handler, req.elapsed_ns,
                                 [(r.label, r.calls, r.own_ns, r.cum_ns) for r in req.rows])

    def watched_calls(state: Any) -> dict[str, int]:  # a _state.State
        entries = registry.entries
        return {entries[k].name: n for k, n in _state.calls(state).items()}

    profiler = Profiler(cfg.profile, sink, watched_calls)
    exporter.hooks.append(profiler.on_flush)
    return profiler


def _claim_slot(cfg: Config) -> _slots.WorkerSlot | None:
    """This process's slot, or a fallback name (one warning per process)."""
    global _fallback_warned
    if cfg.worker == "none":
        return None
    directory = Path(cfg.slot_dir) if cfg.slot_dir else _slots.default_dir()
    slot, error = _slots.take(directory, f"{cfg.graphite.prefix}.{cfg.host}")
    if error is not None and not _fallback_warned:
        _fallback_warned = True
        log.warning("callwatch: cannot take a worker slot in %s (%s); this process sends as worker %s, "
                    "a name no other live process uses. Fix: set naming.slot_dir to a directory "
                    "that only this user can write", directory, error, slot.name)
    return slot


def _handoff(slot: _slots.WorkerSlot) -> Snapshot | None:
    data = slot.take_handoff()
    if data is None:
        return None
    try:
        return snapshot_from_json(data, _core.registry)
    except (KeyError, TypeError, ValueError) as e:
        log.warning("callwatch: ignoring a malformed hand-off in %s (%s)", slot.where, e)
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
        if rt.gc_meter is not None:  # first: its items pending now are in the final flush
            rt.gc_meter.uninstall()
        try:
            final = rt.exporter.stop(timeout)
            _last_partial = (rt.worker, final) if final is not None else None
            if rt.slot is not None and final is not None:
                rt.slot.leave_handoff(snapshot_to_json(final))
        except Exception:
            log.exception("callwatch: final flush failed")
        finally:
            _close_stages(rt)
            if rt.slot is not None:
                rt.slot.release()
            rt.patches.undo()
            _request.dimension_functions = {}
            _request.profiler = None


def _close_stages(rt: Runtime) -> None:
    """After the final flush: a leak hunt under way stops the tracemalloc it started."""
    for stage in rt.exporter.stages:
        close = getattr(stage, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                log.exception("callwatch: closing %r failed", stage)


def _at_exit() -> None:
    shutdown()


#: the final flush and slot hand-off of a process that multiprocessing ends (see _mpexit)
_exit_hook = _mpexit.ExitHook(_at_exit)


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
        if rt.gc_meter is not None:
            rt.gc_meter.after_fork_in_child()
        try:
            if rt.slot is not None:
                rt.slot.forget_after_fork()  # the parent keeps its slot
                rt.slot = _claim_slot(rt.config)
                rt.exporter.namer = Namer.from_config(rt.config, rt.worker)
                _start_interval(rt)
            rt.exporter.after_fork_in_child()
            _exit_hook.arm()  # in case multiprocessing was imported after configure()
        except Exception:
            log.exception("callwatch: could not set up the forked child")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
