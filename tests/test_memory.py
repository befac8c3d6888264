"""``memory:``: GC pauses per process and per handler, and the process's memory gauges."""

from __future__ import annotations

import gc
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import callwatch
from callwatch import _core, _runtime
from callwatch.aggregate import GC, Snapshot, snapshot_from_json, snapshot_to_json
from callwatch.config import ConfigError, load
from callwatch.memory import GcMeter, read_memory
from callwatch.naming import Namer


@pytest.fixture()
def no_automatic_gc() -> Iterator[None]:
    """Only the collections a test makes: the counts are then exact."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def flushed() -> Snapshot:
    rt = _runtime.active()
    assert rt is not None
    snap = rt.exporter.flush(final=True)
    assert snap is not None
    return snap


def points(snap: Snapshot) -> dict[str, float]:
    return {name: value for name, value, _ in Namer("cw", "h").points(snap)}


def cycles(n: int) -> None:
    """n objects that only the cycle collector frees (each list holds itself)."""
    for _ in range(n):
        a: list[Any] = []
        a.append(a)


def test_collections_are_counted_per_handler_and_per_generation_exactly(no_automatic_gc: None) -> None:
    callwatch.configure({"memory": {}}, start_thread=False, strict=True)

    @callwatch.handler("collects")
    def collects() -> None:
        gc.collect(0)  # whatever was pending: not ours
        cycles(5)
        gc.collect(1)  # generations 0 and 1: exactly our 5

    @callwatch.handler("calm")
    def calm() -> None:
        pass

    for _ in range(3):
        collects()
        calm()
    gc.collect(2)  # outside any request
    p = points(flushed())
    assert p["cw.h.handler.collects.gc.collections"] == 6
    assert p["cw.h.handler.collects.gc.collections_per_request.mean"] == 2.0
    assert p["cw.h.handler.collects.gc.collections_per_request.max"] == 2
    assert "cw.h.handler.calm.gc.collections" not in p  # no collection ran in its requests
    assert p["cw.h.process.gc.gen0.collections"] == 3
    assert p["cw.h.process.gc.gen1.collections"] == 3
    assert p["cw.h.process.gc.gen1.collected"] == 15
    assert p["cw.h.process.gc.gen2.collections"] == 1
    assert p["cw.h.process.gc.outside_requests.collections"] == 1
    assert p["cw.h.process.gc.gen1.uncollectable"] == 0
    # Pauses: each generation's max is one of its pauses, the total their sum, and the
    # handler's GC time is what its 6 collections paused.
    for g in (0, 1, 2):
        assert 0 < p[f"cw.h.process.gc.gen{g}.pause_ms_max"] <= p[f"cw.h.process.gc.gen{g}.pause_ms"]
    in_requests = p["cw.h.process.gc.gen0.pause_ms"] + p["cw.h.process.gc.gen1.pause_ms"]
    assert p["cw.h.handler.collects.gc.ms"] == pytest.approx(in_requests, abs=1e-5)
    assert p["cw.h.process.gc.outside_requests.pause_ms"] == p["cw.h.process.gc.gen2.pause_ms"]
    assert 0 < p["cw.h.handler.collects.gc.share"] <= 100


def test_the_pause_is_the_time_between_start_and_stop() -> None:
    """A unit test of the hook with its own clock: exact nanoseconds."""
    ticks = iter([1_000, 4_500, 10_000, 10_250])
    snaps: list[Snapshot] = []
    callwatch.configure({}, start_thread=False, strict=True, on_snapshot=snaps.append)
    meter = GcMeter(_core.registry, _core.collector, clock=lambda: next(ticks))
    with callwatch.request("r"):
        meter("start", {"generation": 2})
        meter("stop", {"generation": 2, "collected": 7, "uncollectable": 1})
    meter("start", {"generation": 0})
    meter("stop", {"generation": 0, "collected": 0, "uncollectable": 0})
    callwatch.shutdown()
    p = points(snaps[-1])
    assert p["cw.h.handler.r.gc.ms"] == 0.0035
    assert p["cw.h.process.gc.gen2.pause_ms"] == 0.0035
    assert p["cw.h.process.gc.gen2.collected"] == 7
    assert p["cw.h.process.gc.gen2.uncollectable"] == 1
    assert p["cw.h.process.gc.gen0.pause_ms_max"] == 0.00025
    assert p["cw.h.process.gc.outside_requests.pause_ms"] == 0.00025


def test_a_collection_while_callwatch_holds_its_lock_neither_waits_nor_is_lost(no_automatic_gc: None) -> None:
    """The hook takes no lock: a collection inside callwatch's own locked code (a fold)
    goes on, and its numbers are added by the next fold."""
    callwatch.configure({"memory": {}}, start_thread=False, strict=True)
    done = threading.Event()

    def collect_under_the_lock() -> None:
        with _core.collector._lock:
            gc.collect(0)
        done.set()

    t = threading.Thread(target=collect_under_the_lock, daemon=True)
    t.start()
    assert done.wait(10), "a collection under the collector's lock hung"
    assert points(flushed())["cw.h.process.gc.gen0.collections"] == 1


def test_an_interrupt_inside_the_hook_reaches_the_main_thread() -> None:
    """gc swallows what its callbacks raise: a KeyboardInterrupt (Ctrl-C landing in the
    hook) is handed to the main thread again instead of being lost."""
    def clock() -> int:
        raise KeyboardInterrupt

    callwatch.configure({}, start_thread=False, strict=True)
    meter = GcMeter(_core.registry, _core.collector, clock=clock)
    with pytest.raises(KeyboardInterrupt):
        meter("start", {"generation": 0})  # returns: the hook raises nothing itself
        for _ in range(1_000_000):  # the interrupt arrives at the next check
            time.sleep(0)


def hooks() -> int:
    """callwatch's hooks in gc.callbacks."""
    return sum(getattr(cb, "__module__", "") == "callwatch.memory" for cb in gc.callbacks)


def test_the_hook_is_removed_at_shutdown_and_absent_without_the_section() -> None:
    callwatch.configure({"memory": {}}, start_thread=False, strict=True)
    assert hooks() == 1
    callwatch.configure({"memory": {}}, start_thread=False, strict=True)  # again: still one
    assert hooks() == 1
    callwatch.shutdown()
    assert hooks() == 0
    callwatch.configure({}, start_thread=False, strict=True)
    assert hooks() == 0
    callwatch.configure({"memory": {"gc": False}}, start_thread=False, strict=True)
    assert hooks() == 0


def test_runtime_entries_survive_the_hand_off_to_another_process(no_automatic_gc: None) -> None:
    callwatch.configure({"memory": {"process": False}}, start_thread=False, strict=True)

    @callwatch.handler("collects")
    def collects() -> None:
        gc.collect(0)

    collects()
    snap = flushed()
    again = snapshot_from_json(snapshot_to_json(snap), _core.registry)
    gc_points = {k: v for k, v in points(snap).items() if ".gc." in k}
    assert len(gc_points) == 12  # the handler's 7 and generation 0's 5
    assert {k: v for k, v in points(again).items() if ".gc." in k} == gc_points
    gc_entries = [e for e in again.entries if e.name == GC]
    assert len(gc_entries) == 1 and gc_entries[0].runtime


def test_a_watched_function_named_gc_is_not_the_runtime_entry(no_automatic_gc: None) -> None:
    callwatch.configure({"memory": {"process": False}}, start_thread=False, strict=True)

    @callwatch.watch(name="gc")
    def user_gc() -> None:
        pass

    with callwatch.request("h2"):
        user_gc()
    p = points(flushed())
    assert p["cw.h.handler.h2.watch.gc.calls"] == 1
    assert "cw.h.handler.h2.gc.collections" not in p  # no collection ran: nothing of the runtime entry


def _proc_status_kb(field: str) -> int:
    m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    assert m is not None
    return int(m.group(1))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc is Linux's")
def test_memory_gauges_match_what_the_kernel_says() -> None:
    """Against another file of the kernel's (/proc/self/status), read right before and
    after: the RSS lies between them (with a margin for what the reading itself allocates)."""
    before = _proc_status_kb("VmRSS") / 1024
    got = read_memory()
    after = _proc_status_kb("VmRSS") / 1024
    assert min(before, after) - 4 <= got["rss_mb"] <= max(before, after) + 4
    assert 0 < got["uss_mb"] <= got["pss_mb"] <= got["rss_mb"] + 4
    assert abs(got["python_blocks"] - sys.getallocatedblocks()) < 5_000
    callwatch.configure({"memory": {"gc": False}}, start_thread=False, strict=True)
    p = points(flushed())
    assert {k for k in p if ".process." in k} == {
        "cw.h.process.memory.rss_mb", "cw.h.process.memory.uss_mb", "cw.h.process.memory.pss_mb",
        "cw.h.process.memory.python_blocks"}


@pytest.mark.parametrize("text, message", [
    ("memory: {gc: 1}\n", "1: memory.gc: expected true or false, got 1. Fix: write 'gc: true' or 'gc: false'"),
    ("memory: {census: 3}\n", "1: memory.census: unknown key 'census'. Fix: remove it, or did you mean 'process'?"),
    ("memory: on\n", "1: memory: expected a mapping of keys (gc, process), got True. Fix: write it as 'memory:' "
                      "followed by indented 'key: value' lines"),
])
def test_bad_memory_section_is_one_located_error(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "cw.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(str(f))
    assert str(e.value) == f"{f}:{message}"


def test_memory_section_defaults() -> None:
    assert load({}).memory is None
    m = load({"memory": {}}).memory
    assert m is not None and m.gc and m.process
