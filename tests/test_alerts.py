"""callwatch alerts check against the real stack: OK, spike, p99, missing data, Graphite down."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

import callwatch
from callwatch.cli import main
from callwatch.testing import FakeClock

import cwsample.storage as st

from conftest import Graphite, free_ports

pytestmark = pytest.mark.graphite


def write_config(tmp_path: Path, graphite: Graphite, prefix: str, tags: bool = False) -> Path:
    p = tmp_path / "cw.yaml"
    p.write_text(f"graphite: {{host: 127.0.0.1, port: {graphite.line_port}, prefix: {prefix}, interval: 60, "
                 f"tags: {str(tags).lower()}}}\n"
                 "naming: {host: h1}\n"
                 "watch: [{target: 'cwsample.storage:Storage.get_*', group: db}]\n"
                 "spikes: {enabled: false}\n"
                 "alerts: {window: 10min, baseline: 1h, p99_warning_ms: 50, p99_critical_ms: 500, "
                 "no_data_minutes: 5}\n")
    return p


def push(config: Path, minutes: list[tuple[int, int, float]]) -> None:
    """One interval per (minutes ago, players, ms per request)."""
    now = int(time.time())
    first = (now - minutes[0][0] * 60) // 60 * 60
    clock = FakeClock(first)
    with clock:
        callwatch.configure(config, clock=clock, start_thread=False, strict=True)
        s = st.Storage()
        for ago, players, ms in minutes:
            target = (now - ago * 60) // 60 * 60
            clock.advance(target - clock.time())
            callwatch.flush()
            for _ in range(10):
                with callwatch.request("deal"):
                    s.get_players(1, players)
                    clock.advance(ms / 1000)
        clock.advance(60)
        callwatch.flush()
        callwatch.shutdown()


def run_check(config: Path, graphite: Graphite, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main(["alerts", "check", "--config", str(config), "--graphite-web", graphite.web_url, "--json"])
    return code, json.loads(capsys.readouterr().out)


def wait_points(graphite: Graphite, prefix: str, n: int) -> None:
    graphite.wait_for(f"sumSeries({prefix}.*.handler.deal.requests)", int(time.time()) - 7200,
                      int(time.time()) + 60, lambda p: len(p) >= n)


BASELINE = [(ago, 2, 1.0) for ago in range(70, 12, -2)]  # 2 players, 1 ms, every 2 min until 12 min ago


@pytest.mark.parametrize("recent, code, rule, status", [
    ([(8, 2, 1.0), (4, 2, 1.0), (1, 2, 1.0)], 0, "spike", "OK"),
    ([(8, 7, 1.0), (4, 7, 1.0), (1, 7, 1.0)], 1, "spike", "WARNING"),      # x3.0 (get_player 2 -> 7 calls)
    ([(8, 2, 80.0), (4, 2, 1.0), (1, 2, 1.0)], 1, "p99", "WARNING"),       # 80 ms >= 50 ms
    ([], 2, "no_data", "CRITICAL"),                                        # nothing for the last 12 min
], ids=["ok", "spike", "p99", "no-data"])
def test_alerts_check(graphite: Graphite, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                      recent: list[tuple[int, int, float]], code: int, rule: str, status: str) -> None:
    prefix = "al" + uuid.uuid4().hex[:8]
    config = write_config(tmp_path, graphite, prefix)
    push(config, BASELINE + recent)
    wait_points(graphite, prefix, len(BASELINE) + len(recent))
    got_code, out = run_check(config, graphite, capsys)
    by_rule = {r["rule"]: r for r in out["results"]}
    assert (got_code, by_rule[rule]["status"]) == (code, status), out
    if rule == "spike" and status == "WARNING":
        v = by_rule["spike"]["values"]
        assert (v["handler"], v["function"], v["current"], v["baseline"]) == ("deal", "Storage_get_player", 7.0, 2.0)


def test_tagged_series(graphite: Graphite, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = "at" + uuid.uuid4().hex[:8]
    config = write_config(tmp_path, graphite, prefix, tags=True)
    push(config, BASELINE + [(4, 7, 1.0), (1, 7, 1.0)])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got_code, out = run_check(config, graphite, capsys)
        if got_code == 1:
            break
        time.sleep(0.5)
    assert got_code == 1, out
    assert {r["rule"]: r["status"] for r in out["results"]}["spike"] == "WARNING"


def test_graphite_down_is_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (dead,) = free_ports(1)
    p = tmp_path / "cw.yaml"
    p.write_text("graphite: {prefix: x}\n")
    code = main(["alerts", "check", "--config", str(p), "--graphite-web", f"http://127.0.0.1:{dead}"])
    out = capsys.readouterr().out
    assert code == 3
    assert out.startswith("CALLWATCH UNKNOWN - 1 unknown\nUNKNOWN graphite: graphite-web at http://127.0.0.1:")
    assert "Traceback" not in out


def test_nothing_under_the_prefix_is_unknown(graphite: Graphite, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, graphite, "nothing" + uuid.uuid4().hex[:8])
    code, out = run_check(config, graphite, capsys)
    assert code == 3 and "no callwatch metrics under" in out["results"][0]["message"]


class AlertLeak:
    """What the leak test's handler leaks."""


def test_leak_suspects_are_a_warning(graphite: Graphite, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A census at each flush (``leak_window: 2``: judged from the 4th) while a handler keeps
    500 more objects per interval: the process's latest census has a suspect -> WARNING."""
    prefix = "ak" + uuid.uuid4().hex[:8]
    config = write_config(tmp_path, graphite, prefix)
    config.write_text(config.read_text() + "memory: {gc: false, process: false, census_every: 1, leak_window: 2}\n")
    kept: list[AlertLeak] = []
    now = int(time.time())
    clock = FakeClock((now - 8 * 60) // 60 * 60)
    with clock:
        callwatch.configure(config, clock=clock, start_thread=False, strict=True)
        for ago in range(8, 0, -1):
            with callwatch.request("deal"):
                kept.extend(AlertLeak() for _ in range(500))
            clock.advance((now - (ago - 1) * 60) // 60 * 60 - clock.time())
            callwatch.flush()
        kept.extend(AlertLeak() for _ in range(500))  # the shutdown's census too finds a new high
        callwatch.shutdown()
    graphite.wait_for(f"sumSeries({prefix}.*.process.memory.leak_suspects)", now - 900, now + 120,
                      lambda p: sum(1 for v in p.values() if v) >= 5)
    code, out = run_check(config, graphite, capsys)
    by_rule = {r["rule"]: r for r in out["results"]}
    assert (code, by_rule["leak"]["status"]) == (1, "WARNING"), out
    assert by_rule["leak"]["values"] == {"suspects": {"h1_w0": 1}}
    assert "1 on h1_w0" in by_rule["leak"]["message"]
