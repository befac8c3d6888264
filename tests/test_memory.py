"""``memory:``: GC pauses per process and per handler, and the process's memory gauges."""

from __future__ import annotations

import gc
import random
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import callwatch
from callwatch import _core, _runtime
from callwatch.aggregate import GC, Snapshot, snapshot_from_json, snapshot_to_json
from callwatch.config import ConfigError, load
from callwatch.memory import Census, GcMeter, read_memory
from callwatch.naming import Namer

from conftest import only_explicit_collections


@pytest.fixture()
def no_automatic_gc() -> Iterator[None]:
    with only_explicit_collections():
        yield


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
        gc.collect(1)  # generations 0 and 1: whatever garbage was there, not ours
        cycles(5)
        gc.collect(0)  # the young generation: exactly our 5

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
    assert p["cw.h.process.gc.gen0.collected"] == 15
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
    ("memory: {census: 3}\n", "1: memory.census: unknown key 'census'. Fix: remove it, or did you mean "
                               "'census_every'?"),
    ("memory: on\n", "1: memory: expected a mapping of keys (gc, process, census_every, top, hunt_dir, "
                      "leak_window), got True. Fix: write it as 'memory:' followed by indented 'key: value' lines"),
    ("memory: {hunt_dir: /dev/null/x}\n", "1: memory.hunt_dir: '/dev/null/x' is not a directory this process can "
                                          "write (/dev/null is not a directory). Fix: create it and let the "
                                          "application's user write to it, or choose another directory, e.g. "
                                          "hunt_dir: /var/tmp/callwatch-leaks"),
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


class Leaky:
    """The census's test type: only ``LEAKED`` holds its instances."""


LEAKED: list[Leaky] = []


def test_the_census_counts_a_leaking_handlers_objects_exactly() -> None:
    callwatch.configure({"memory": {"gc": False, "process": False, "census_every": 1, "top": 50}},
                        start_thread=False, strict=True)

    @callwatch.handler("leaks")
    def leaks() -> None:
        LEAKED.extend(Leaky() for _ in range(2_000))

    try:
        leaks()
        first = points(flushed())
        callwatch.configure({"memory": {"gc": False, "process": False, "census_every": 1, "top": 50}},
                            start_thread=False, strict=True)
        leaks()  # the next census's baseline is the first's: a new configure starts over
        base = points(flushed())
        for _ in range(10):
            leaks()
        after = points(flushed())
    finally:
        LEAKED.clear()
    name = "cw.h.process.memory.types.test_memory_Leaky"
    assert first[name + ".count"] == 2_000 and name + ".growth" not in first  # no census before it
    assert base[name + ".count"] == 4_000
    assert after[name + ".count"] == 24_000
    assert after[name + ".growth"] == 20_000
    assert after[name + ".suspect"] == 0.0  # 2 censuses: too few to judge
    assert after["cw.h.process.memory.census.objects"] > 24_000
    assert after["cw.h.process.memory.census.ms"] > 0


def simulate(series: dict[str, Callable[[int], int]], censuses: int, window: int = 5,
             rss: Callable[[int], int] = lambda i: 100_000) -> list[list[str]]:
    """Census.judge over synthetic counts (and RSS, KB) -> the suspects at each census
    (``rss`` among them when the RSS is one)."""
    at = [0]
    census = Census(1, 10, window, count=lambda: {}, rss_kb=lambda: rss(at[0]))
    out = []
    for i in range(censuses):
        at[0] = i
        g = census.judge({name: f(i) for name, f in series.items()})
        out.append(sorted(k.split(".")[1] for k, v in g.items() if k.endswith(".suspect") and v)
                   + (["rss"] if g["rss_suspect"] else []))
        assert g["leak_suspects"] == len(out[-1])
    return out


def test_the_rss_is_judged_by_the_same_rule() -> None:
    """A heap that grows to a plateau (with noise) stops being suspected; one that keeps
    growing 3 MB a census (12 MB over the window of 5, above RSS_MIN_MB) is suspected from
    the first census judged.  Steady: never."""
    rng = random.Random(3)
    steady = {"t": lambda i: 1_000}
    noisy = simulate(steady, 5_000, rss=lambda i: 200_000 + rng.randint(-20_000, 20_000))
    assert not any(noisy)
    growing = simulate(steady, 60, rss=lambda i: 100_000 + 3_072 * i + rng.randint(-200, 200))
    assert [i for i, s in enumerate(growing) if s][0] == 9 and all(s == ["rss"] for s in growing[9:])
    plateau = simulate(steady, 60, rss=lambda i: 100_000 + 3_072 * min(i, 20) + rng.randint(-200, 200))
    assert all(s == ["rss"] for s in plateau[9:20]) and not any(plateau[22:])


def test_a_steady_server_raises_no_leak_alarm_in_a_long_run() -> None:
    """40 types whose counts move within a band (up to +-20 %, and one that is often
    empty), 20 000 censuses (two weeks at one a minute): no suspect, ever."""
    rng = random.Random(14)
    series: dict[str, Callable[[int], int]] = {
        f"t{k}": (lambda i, base=rng.randint(200, 200_000): int(base * rng.uniform(0.8, 1.2))) for k in range(39)}
    series["bursty"] = lambda i: rng.choice([0, 0, 0, rng.randint(1, 50_000)])
    assert not any(simulate(series, 20_000))


def test_a_leak_is_suspected_as_soon_as_it_can_be_judged_and_cleared_when_it_stops() -> None:
    rng = random.Random(7)
    steady = {f"t{k}": (lambda i: int(50_000 * rng.uniform(0.9, 1.1))) for k in range(10)}
    # grows by ~500 a census with noise, for 40 censuses; then stays where it got to
    leak = {"history": lambda i: 10_000 + 500 * min(i, 40) + rng.randint(-100, 100)}
    seen = simulate({**steady, **leak}, 80)
    window = 5
    assert [i for i, s in enumerate(seen) if s][0] == 2 * window - 1  # the first census judged
    assert all(s == ["history"] for s in seen[2 * window - 1:40])
    assert not any(seen[42:])  # no new high since census 41: no longer suspect


class Hoarded:
    """What the leak hunt's test finds: only ``HOARD`` holds its instances."""


HOARD: dict[str, list[Hoarded]] = {"kept": []}


def test_a_leak_hunt_finds_what_grew_what_holds_it_and_where_it_was_allocated(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import shutil

    from callwatch.cli import main

    hunt = tmp_path / "hunt"
    hunt.mkdir()
    assert main(["leaks", str(hunt)]) == 1  # nothing yet
    callwatch.configure({"memory": {"gc": False, "process": False, "census_every": 0, "hunt_dir": str(hunt)}},
                        start_thread=False, strict=True)
    rt = _runtime.active()
    assert rt is not None
    (hunt / f"start.{os.getpid()}").write_text("0\n")
    try:
        rt.exporter.flush(final=True)  # sees the trigger: the hunt starts
        assert not (hunt / f"start.{os.getpid()}").exists()
        HOARD["kept"].extend(Hoarded() for _ in range(3_000))
        rt.exporter.flush(final=True)  # 0 seconds later: it ends
    finally:
        HOARD["kept"].clear()
    (report,) = hunt.glob("*/report.txt")
    text = report.read_text()
    assert "  test_memory.Hoarded: 0 -> 3,000 (+3,000)" in text
    # the chain from the module: its globals, HOARD, its "kept" list, one object
    assert ("What holds a test_memory.Hoarded (objgraph's back-reference chain from a module):\n"
            "  module test_memory\n"
            "    .__dict__ -> dict of ") in text
    assert "    ['HOARD'] -> dict of 1\n    ['kept'] -> list of 3,000\n    [" in text
    assert "] -> test_memory.Hoarded\n" in text
    # where they were allocated: this test's line above
    assert re.search(r"test_memory\.py:\d+: \+\d", text.split("Allocation sites")[1])
    dots = list(report.parent.glob("chain-*.dot"))
    assert dots and "digraph" in dots[0].read_text()
    if shutil.which("dot"):
        assert "<svg" in dots[0].with_suffix(".svg").read_text()
    capsys.readouterr()
    assert main(["leaks", str(hunt)]) == 0
    assert "test_memory.Hoarded: 0 -> 3,000" in capsys.readouterr().out


def test_a_hunt_cut_short_by_shutdown_stops_its_tracemalloc(tmp_path: Path) -> None:
    import os
    import tracemalloc

    assert not tracemalloc.is_tracing()
    callwatch.configure({"memory": {"gc": False, "process": False, "census_every": 0, "hunt_dir": str(tmp_path)}},
                        start_thread=False, strict=True)
    rt = _runtime.active()
    assert rt is not None
    (tmp_path / f"start.{os.getpid()}").write_text("600")
    rt.exporter.flush(final=True)
    assert tracemalloc.is_tracing()  # the hunt runs
    callwatch.shutdown()
    assert not tracemalloc.is_tracing()
    assert not list(tmp_path.glob("*/report.txt"))  # abandoned: no report


def test_a_trigger_that_is_not_a_regular_file_neither_blocks_nor_starts_a_hunt(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import os
    import tracemalloc

    os.mkfifo(tmp_path / f"start.{os.getpid()}")  # opening it to read would wait for a writer
    callwatch.configure({"memory": {"gc": False, "process": False, "census_every": 0, "hunt_dir": str(tmp_path)}},
                        start_thread=False, strict=True)
    rt = _runtime.active()
    assert rt is not None
    done = threading.Event()
    t = threading.Thread(target=lambda: (rt.exporter.flush(final=True), done.set()), daemon=True)
    t.start()
    assert done.wait(10), "the flush hung on a FIFO trigger"
    assert not tracemalloc.is_tracing()
    assert "is not a regular file" in caplog.text


@pytest.mark.parametrize("text, seconds", [("", 60.0), ("5", 5.0), ("-3", 0.0), ("inf", 3600.0), ("nan", 60.0),
                                           ("soon", 60.0)])
def test_hunt_lengths(text: str, seconds: float) -> None:
    from callwatch._leakhunt import _seconds

    assert _seconds(text, Path("start")) == seconds
