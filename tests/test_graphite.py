"""End to end against a real carbon-cache and graphite-web (started by the session fixture).

wrap -> attribute -> aggregate -> graphyte -> carbon-cache -> graphite-web /render.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import callwatch
from callwatch.testing import FakeClock

import cwsample.storage as st

from conftest import Graphite, only_explicit_collections

pytestmark = pytest.mark.graphite


def unique_prefix() -> str:
    return "it" + uuid.uuid4().hex[:8]


def cfg(graphite: Graphite, prefix: str, **extra: object) -> dict[str, object]:
    g = {"host": "127.0.0.1", "port": graphite.line_port, "interval": 10, "prefix": prefix, **extra}
    return {"graphite": g, "naming": {"host": "h1"},
            "watch": [{"target": "cwsample.storage:get_user", "group": "db"},
                      {"target": "cwsample.storage:Storage.get_*", "group": "db"},
                      {"target": "cwsample.storage:Redis.*", "group": "redis"}]}


def drive_known_load(clock: FakeClock, players: int, tables: int) -> None:
    s, r = st.Storage(), st.Redis()

    @callwatch.handler("deal")
    def deal() -> None:
        s.get_table(1)
        s.get_players(1, players)  # 1 + players get_player calls
        clock.advance(0.004)

    @callwatch.handler("login")
    def login(uid: int) -> None:
        r.get(f"session:{uid}")
        st.get_user(uid)
        clock.advance(0.001)

    for _ in range(tables):
        deal()
    for uid in range(5):
        login(uid)


def test_exact_numbers_at_exact_timestamps(graphite: Graphite) -> None:
    prefix = unique_prefix()
    now = int(time.time())
    t0 = (now - 600) // 10 * 10  # well inside carbon's 1 s : 1 h archive
    clock = FakeClock(t0 + 2)
    with clock:
        callwatch.configure(cfg(graphite, prefix), clock=clock, start_thread=False, strict=True)
        drive_known_load(clock, players=2, tables=3)  # interval t0: a table of 2
        clock.advance(10)
        callwatch.flush()
        drive_known_load(clock, players=7, tables=4)  # interval t0+10: a table of 7
        clock.advance(10)
        callwatch.flush()
        callwatch.shutdown()

    base = f"{prefix}.h1_w0.handler"
    window = (t0 - 10, t0 + 30)

    def exact(metric: str, expected: dict[int, float]) -> None:
        got = graphite.wait_for(f"{base}.{metric}", *window, lambda p: len(p) >= len(expected))
        assert got == expected, metric

    exact("deal.requests", {t0: 3, t0 + 10: 4, t0 + 20: 0})
    exact("login.requests", {t0: 5, t0 + 10: 5, t0 + 20: 0})
    exact("deal.watch.Storage_get_player.calls_per_request.mean", {t0: 2.0, t0 + 10: 7.0})
    exact("deal.watch.Storage_get_player.calls", {t0: 6, t0 + 10: 28, t0 + 20: 0})
    exact("deal.watch.Storage_get_players.calls", {t0: 3, t0 + 10: 4, t0 + 20: 0})
    exact("deal.group.db.calls_per_request.mean", {t0: 4.0, t0 + 10: 9.0})  # table + players + n players
    exact("login.watch.get_user.calls", {t0: 5, t0 + 10: 5, t0 + 20: 0})
    exact("login.group.redis.calls_per_request.max", {t0: 1, t0 + 10: 1})
    exact("deal.response_ms.mean", {t0: 4.0, t0 + 10: 4.0})
    exact("deal.errors", {t0: 0, t0 + 10: 0, t0 + 20: 0})
    # graphite-web's wildcard sum across handlers is what dashboards use
    got = graphite.wait_for(f"sumSeries({base}.*.requests)", *window, lambda p: len(p) >= 3)
    assert got == {t0: 8, t0 + 10: 9, t0 + 20: 0}


def test_tagged_series(graphite: Graphite) -> None:
    prefix = unique_prefix()
    t0 = (int(time.time()) - 300) // 10 * 10
    clock = FakeClock(t0)
    with clock:
        callwatch.configure(cfg(graphite, prefix, tags=True), clock=clock, start_thread=False, strict=True)
        drive_known_load(clock, players=7, tables=2)
        clock.advance(10)
        callwatch.flush()
        callwatch.shutdown()
    window = (t0 - 10, t0 + 20)
    target = (f"seriesByTag('name={prefix}.watch.calls_per_request.mean','handler=deal',"
              "'function=Storage_get_player')")
    got = graphite.wait_for(target, *window, lambda p: bool(p))
    assert got == {t0: 7.0}
    series = graphite.series(f"seriesByTag('name={prefix}.requests')", *window)
    assert {name: pts[t0] for name, pts in series.items()} == {
        f"{prefix}.requests;handler=deal;host=h1;worker=w0": 2,
        f"{prefix}.requests;handler=login;host=h1;worker=w0": 5,
    }


def test_udp(graphite: Graphite) -> None:
    prefix = unique_prefix()
    t0 = (int(time.time()) - 300) // 10 * 10
    clock = FakeClock(t0)
    with clock:
        callwatch.configure(cfg(graphite, prefix, protocol="udp"), clock=clock, start_thread=False, strict=True)
        drive_known_load(clock, players=3, tables=5)
        clock.advance(10)
        callwatch.flush()
        callwatch.shutdown()
    got = graphite.wait_for(f"{prefix}.h1_w0.handler.deal.watch.Storage_get_player.calls", t0 - 10, t0 + 20,
                            lambda p: len(p) >= 2)
    assert got == {t0: 15, t0 + 10: 0}  # the final flush at shutdown reports the empty last interval


def test_real_thread_and_clock_lose_nothing(graphite: Graphite) -> None:
    """The flush thread on the real clock (1 s interval): every request arrives exactly once."""
    prefix = unique_prefix()
    t_start = int(time.time())
    rt = callwatch.configure(cfg(graphite, prefix, interval=1), strict=True)
    assert rt is not None
    s = st.Storage()
    sent = 0
    deadline = time.time() + 3.5
    while time.time() < deadline:
        with callwatch.request("poll"):
            s.get_table(1)
            s.get_table(2)
        sent += 1
        time.sleep(0.002)
    callwatch.shutdown()
    assert rt.exporter.buffered == 0 and rt.exporter.stats.send_errors == 0
    window = (t_start - 2, int(time.time()) + 2)
    base = f"{prefix}.h1_w0.handler.poll"
    got = graphite.wait_for(f"{base}.requests", *window, lambda p: sum(p.values()) == sent)
    assert sum(got.values()) == sent
    assert len([v for v in got.values() if v]) >= 3  # spread over several 1 s intervals
    calls = graphite.wait_for(f"{base}.watch.Storage_get_table.calls", *window,
                              lambda p: sum(p.values()) == 2 * sent)
    assert sum(calls.values()) == 2 * sent


def test_carbon_unreachable_then_back(graphite: Graphite) -> None:
    """Points made while carbon is unreachable arrive later with their own timestamps."""
    from conftest import free_ports

    prefix = unique_prefix()
    t0 = (int(time.time()) - 300) // 10 * 10
    clock = FakeClock(t0)
    (dead_port,) = free_ports(1)
    config = cfg(graphite, prefix)
    config["graphite"]["port"] = dead_port  # type: ignore[index]
    with clock:
        rt = callwatch.configure(config, clock=clock, start_thread=False, strict=True)
        assert rt is not None
        for i in range(3):
            drive_known_load(clock, players=i + 1, tables=1)
            clock.advance(10)
            callwatch.flush()
        assert rt.exporter.stats.send_errors == 3 and rt.exporter.buffered > 0
        rt.exporter.sender.port = graphite.line_port  # carbon is back at that address
        clock.advance(10)
        callwatch.flush()
        assert rt.exporter.buffered == 0
        callwatch.shutdown()
    got = graphite.wait_for(f"{prefix}.h1_w0.handler.deal.watch.Storage_get_player.calls_per_request.mean",
                            t0 - 10, t0 + 40, lambda p: len(p) >= 3)
    assert got == {t0: 1.0, t0 + 10: 2.0, t0 + 20: 3.0}
    errors = graphite.wait_for(f"{prefix}.h1_w0.callwatch.send_errors", t0 - 10, t0 + 50, lambda p: len(p) >= 5)
    # each interval reports the failed sends since the previous one; the last is shutdown's
    assert errors == {t0: 0, t0 + 10: 1, t0 + 20: 1, t0 + 30: 1, t0 + 40: 0}


def test_demo_pushes_the_growth_to_graphite(graphite: Graphite) -> None:
    import io

    from callwatch.config import short_hostname
    from callwatch.demo import run as demo_run

    t_start = int(time.time())
    out = io.StringIO()
    result = demo_run.run(duration=6, interval=1, threads=2, out=out,
                          graphite=("127.0.0.1", graphite.line_port), graphite_web=graphite.web_url)
    assert result.points_sent > 0
    target = f"callwatch.demo.{short_hostname()}_w0.handler.deal.watch.Database_get_player.calls_per_request.mean"
    got = graphite.wait_for(target, t_start - 2, int(time.time()) + 2,
                            lambda p: 2.0 in p.values() and 7.0 in p.values())
    values = sorted(got.values())
    assert values[0] == 2.0 and values[-1] == 7.0  # a table of 2, then of 7 (one mixed second between)
    assert f"{graphite.web_url}/render?target=" in out.getvalue()
    # the census (one per flush): the leaking type's count only grows once the table is full
    leaking = f"callwatch.demo.{short_hostname()}_w0.process.memory.types.callwatch_demo_game_HandRecord.count"
    # (sent while it is a suspect, or among the top 10 types: at least once, and never less)
    counts = graphite.wait_for(leaking, t_start - 2, int(time.time()) + 2, bool)
    series = [v for _, v in sorted(counts.items())]
    assert series and series == sorted(series) and series[-1] > 0, counts
    assert "(the census: the type that leaks)" in out.getvalue()


def test_profile_metrics_in_graphite(graphite: Graphite) -> None:
    import sqlite3

    prefix = unique_prefix()
    t0 = (int(time.time()) - 300) // 10 * 10
    clock = FakeClock(t0)
    conn = sqlite3.connect(":memory:")

    @callwatch.handler("report")
    def report(n: int) -> None:
        for _ in range(n):
            st.fact(3)  # not watched, not in the top 1: not reported
            conn.execute("SELECT 1").fetchone()

    config = cfg(graphite, prefix)
    # top 1 is the handler function itself (the largest cumulative time); the C method
    # that no wrapper can reach is reported because a `mode: sampled` entry names it
    config["profile"] = {"rate": 1.0, "min_interval": 0, "budget": 1.0, "top": 1}
    config["watch"] = [{"target": "sqlite3.Connection.execute", "mode": "sampled"}]
    with clock:
        callwatch.configure(config, clock=clock, start_thread=False, strict=True)
        for _ in range(3):
            report(4)
        clock.advance(10)
        callwatch.flush()
        callwatch.shutdown()
    base = f"{prefix}.h1_w0.handler.report.profile"
    window = (t0 - 10, t0 + 20)
    assert graphite.wait_for(f"{base}.requests", *window, bool) == {t0: 3}
    series = graphite.series(f"{base}.*.calls_per_request", *window)
    deadline = time.monotonic() + 10
    while len(series) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        series = graphite.series(f"{base}.*.calls_per_request", *window)
    assert series == {f"{base}.test_graphite_report.calls_per_request": {t0: 1.0},
                      f"{base}.sqlite3_Connection_execute.calls_per_request": {t0: 4.0}}


def test_gc_pauses_and_memory_in_graphite(graphite: Graphite) -> None:
    """``memory: {}``: a handler that makes two collections per request (the second frees
    exactly 5 objects) and one collection outside any request, read back from graphite-web."""
    prefix = unique_prefix()
    t0 = (int(time.time()) - 300) // 10 * 10
    clock = FakeClock(t0)

    @callwatch.handler("collects")
    def collects() -> None:
        gc.collect(1)  # generations 0 and 1: whatever garbage was there
        for _ in range(5):
            a: list[object] = []
            a.append(a)
        del a  # the last one too is garbage now
        gc.collect(0)  # the young generation: exactly those 5

    config = cfg(graphite, prefix)
    config["memory"] = {}
    with only_explicit_collections(), clock:
        callwatch.configure(config, clock=clock, start_thread=False, strict=True)
        for _ in range(3):
            collects()
        gc.collect(2)
        clock.advance(10)
        callwatch.flush()
        callwatch.shutdown()
    base = f"{prefix}.h1_w0"
    window = (t0 - 10, t0 + 20)
    # Counts seen once are 0 in the next interval (the shutdown's partial one at t0 + 10),
    # not a gap; per-request means are sent only for intervals with requests.
    for metric, value in (("handler.collects.gc.collections_per_request.mean", {t0: 2.0}),
                          ("handler.collects.gc.collections", {t0: 6.0, t0 + 10: 0.0}),
                          ("process.gc.gen0.collections", {t0: 3.0, t0 + 10: 0.0}),
                          ("process.gc.gen1.collections", {t0: 3.0, t0 + 10: 0.0}),
                          ("process.gc.gen0.collected", {t0: 15.0, t0 + 10: 0.0}),
                          ("process.gc.gen2.collections", {t0: 1.0, t0 + 10: 0.0}),
                          ("process.gc.outside_requests.collections", {t0: 1.0, t0 + 10: 0.0})):
        assert graphite.wait_for(f"{base}.{metric}", *window, lambda p: len(p) == len(value)) == value, metric
    pause = graphite.wait_for(f"{base}.process.gc.gen2.pause_ms_max", *window, bool)
    assert 0 < pause[t0] < 10_000
    rss = graphite.wait_for(f"{base}.process.memory.rss_mb", *window, lambda p: len(p) == 2)
    assert sorted(rss) == [t0, t0 + 10] and all(10 < v < 16_384 for v in rss.values())  # with pytest loaded


def test_a_leaking_type_is_a_suspect_series_and_one_graphite_event(graphite: Graphite) -> None:
    """``memory.census_every: 1``, ``leak_window: 2``: a handler leaking 500 objects of a
    type of its own per interval is judged from the 4th census on; its suspect series is 1
    from there, and graphite-web holds one event for it, however long it goes on."""
    prefix = unique_prefix()
    leak_type = type(f"Leak{prefix}", (), {})  # a type no other test (or run) makes
    kept: list[object] = []
    t0 = (int(time.time()) - 600) // 10 * 10
    clock = FakeClock(t0)

    @callwatch.handler("leaks")
    def leaks() -> None:
        kept.extend(leak_type() for _ in range(500))

    config = cfg(graphite, prefix, web_url=graphite.web_url)
    # top 1: the type is sent only while it is a suspect, whatever the heap's other types
    config["memory"] = {"gc": False, "process": False, "census_every": 1, "leak_window": 2, "top": 1}
    with clock:
        callwatch.configure(config, clock=clock, start_thread=False, strict=True)
        for _ in range(6):
            leaks()
            clock.advance(10)
            callwatch.flush()
        callwatch.shutdown()
    name = f"test_graphite_Leak{prefix}"
    window = (t0 - 10, t0 + 70)
    # Censuses 4 to 6 find it a suspect, and only then is its series sent (top 1); the
    # clearing is read from the process's count of suspects: the shutdown's 7th census
    # found no new high (no request since).
    got = graphite.wait_for(f"{prefix}.h1_w0.process.memory.types.{name}.suspect", *window,
                            lambda p: t0 + 50 in p)
    assert got == {t0 + 30: 1.0, t0 + 40: 1.0, t0 + 50: 1.0}, got
    count = graphite.wait_for(f"{prefix}.h1_w0.process.memory.leak_suspects", *window, lambda p: t0 + 60 in p)
    assert count[t0 + 60] == 0.0 and all(count[t] >= 1.0 for t in (t0 + 30, t0 + 40, t0 + 50)), count
    # the census's growth, read back: exactly the 500 kept in each of those intervals
    growth = graphite.wait_for(f"{prefix}.h1_w0.process.memory.types.{name}.growth", *window,
                               lambda p: t0 + 50 in p)
    assert {t: growth.get(t) for t in (t0 + 30, t0 + 40, t0 + 50)} == {t0 + 30: 500.0, t0 + 40: 500.0,
                                                                     t0 + 50: 500.0}, growth
    evs = events(graphite, name)
    assert len(evs) == 1, evs
    assert f"leak suspect test_graphite.Leak{prefix}" in str(evs[0]["what"])
    assert set(evs[0]["tags"]) == {"callwatch", "leak", name}  # type: ignore[arg-type]


def events(graphite: Graphite, tag: str) -> list[dict[str, object]]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{graphite.web_url}/events/get_data?from=-2d&until=%2B1d&tags={tag}",
                                timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def test_spike_posts_one_graphite_event_and_a_metric(graphite: Graphite) -> None:
    prefix = unique_prefix()
    t0 = (int(time.time()) - 600) // 10 * 10
    clock = FakeClock(t0)
    handler = f"deal{prefix}"  # a handler name no other test uses: its events are ours
    config = cfg(graphite, prefix, web_url=graphite.web_url)
    with clock:
        callwatch.configure(config, clock=clock, start_thread=False, strict=True)
        for players in (2, 2, 2, 2, 7, 7, 2):  # four normal intervals, a spike for two, back
            s = st.Storage()
            for _ in range(10):
                with callwatch.request(handler):
                    s.get_players(1, players)
            clock.advance(10)
            callwatch.flush()
        callwatch.shutdown()
    got = events(graphite, handler)
    # one event per spiking pair for the whole spike, not one per interval: the function,
    # and its group db (3 -> 8 calls per request with get_players)
    assert sorted(e["tags"][3] for e in got) == ["Storage_get_player", "db"], got  # type: ignore[index]
    (ev,) = [e for e in got if "Storage_get_player" in e["tags"]]  # type: ignore[operator]
    assert ev["when"] == t0 + 40
    assert set(ev["tags"]) >= {"callwatch", "spike", handler, "Storage_get_player"}  # type: ignore[arg-type]
    assert "Storage_get_player: 7.00 calls/request, baseline 2.00 (x3.50)" in str(ev["what"])
    spike = graphite.wait_for(f"{prefix}.h1_w0.handler.{handler}.watch.Storage_get_player.spike",
                              t0 - 10, t0 + 80, lambda p: len(p) >= 2)
    assert spike == {t0 + 40: 3.5, t0 + 50: 3.5}


def test_demo_spike_shows_up_as_a_graphite_event(graphite: Graphite) -> None:
    import io

    from callwatch.demo import run as demo_run

    t_start = time.time()
    out = io.StringIO()
    demo_run.run(duration=8, interval=1, threads=2, out=out, graphite=("127.0.0.1", graphite.line_port),
                 graphite_web=graphite.web_url)
    got = [e for e in events(graphite, "spike") if float(e["when"]) >= t_start - 2]  # type: ignore[arg-type]
    functions = {tuple(e["tags"])[3] for e in got if "deal" in e["tags"]}  # type: ignore[arg-type]
    assert "Database_get_player" in functions, (got, out.getvalue())
    assert "posted as a Graphite event" in out.getvalue()


SLOTLESS_CHILD = """
import sys
import callwatch
from callwatch.testing import FakeClock

port, prefix, slot_dir, t0, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
clock = FakeClock(t0 + 1)
with clock:
    rt = callwatch.configure({"graphite": {"host": "127.0.0.1", "port": int(port), "interval": 10, "prefix": prefix},
                              "naming": {"host": "h", "slot_dir": slot_dir}, "spikes": {"enabled": False}},
                             clock=clock, start_thread=False, strict=True)
    print(rt.worker, flush=True)
    sys.stdin.readline()  # both processes hold their names now
    for _ in range(n):
        with callwatch.request("job"):
            clock.advance(0.001)
    callwatch.shutdown()  # the final flush sends interval t0
"""


@pytest.mark.parametrize("kind", ["owned by another user", "path too long"])
def test_two_processes_without_a_usable_slot_directory_lose_nothing(graphite: Graphite, tmp_path: Path,
                                                                     kind: str) -> None:
    if kind == "owned by another user":
        slot_dir = tmp_path / "theirs"
        slot_dir.mkdir(mode=0o700)
        if os.getuid() == 0:
            os.chown(slot_dir, 65534, 65534)
        else:
            slot_dir.chmod(0o777)  # cannot give it away: a shared directory is refused the same way
    else:
        slot_dir = tmp_path / ("x" * 300)
    prefix = unique_prefix()
    t0 = (int(time.time()) - 300) // 10 * 10
    children = [subprocess.Popen([sys.executable, "-c", SLOTLESS_CHILD, str(graphite.line_port), prefix,
                                  str(slot_dir), str(t0), str(n)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for n in (100, 120)]
    try:
        workers = [c.stdout.readline().strip() for c in children]  # type: ignore[union-attr]
        outs = [c.communicate("go\n", timeout=60) for c in children]
    finally:
        for c in children:
            c.kill()
    assert [c.returncode for c in children] == [0, 0], outs
    assert workers[0] != workers[1] and all(w.startswith("p") for w in workers), workers
    for _, err in outs:  # each says so, once
        assert err.count("cannot take a worker slot") == 1, err
    window = (t0 - 10, t0 + 20)
    for worker, n in zip(workers, (100, 120)):
        assert graphite.wait_for(f"{prefix}.h_{worker}.handler.job.requests", *window, bool) == {t0: n}
    total = graphite.wait_for(f"sumSeries({prefix}.*.handler.job.requests)", *window, lambda p: p.get(t0) == 220)
    assert total == {t0: 220}
