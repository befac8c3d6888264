"""One spike definition (issue 10 §3, written in callwatch/spikes.py), three implementations:
the in-process detector, ``callwatch alerts check`` and the generated Grafana alert rule
(its query run on graphite-web, its condition applied as Grafana's classic condition
does: the last value of any series above spike_warning).  The same history, three
origins with a spike in one, must get the same verdict from all three; where Graphite
cannot follow the definition (a lasting spike), the difference is tested."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import yaml

import callwatch
from callwatch import alerts
from callwatch.aggregate import Snapshot
from callwatch.config import load
from callwatch.grafana import targets
from callwatch.cli import main
from callwatch.testing import FakeClock

import cwsample.storage as st

from conftest import Graphite

pytestmark = pytest.mark.graphite

INTERVAL = 10
N = 6  # baseline intervals: spikes.baseline_intervals, and alerts.baseline = N x INTERVAL


def write_config(tmp_path: Path, graphite: Graphite, prefix: str, host: str, tags: bool) -> Path:
    p = tmp_path / f"{host}.yaml"
    p.write_text(yaml.safe_dump({
        "graphite": {"host": "127.0.0.1", "port": graphite.line_port, "prefix": prefix, "interval": INTERVAL,
                     "tags": tags},
        "naming": {"host": host, "worker": "none"},
        "watch": [{"target": "cwsample.storage:Storage.get_player"}],
        "spikes": {"factor": 2.0, "floor": 3.0, "baseline_intervals": N, "min_requests": 5},
        "alerts": {"window": f"{2 * INTERVAL}s", "baseline": f"{N * INTERVAL}s", "spike_warning": 2.0,
                   "spike_critical": 100.0, "spike_floor": 3.0},
    }))
    return p


def push(config: Path, t0: int, players: list[int]) -> dict[int, set[tuple[str, str]]]:
    """One interval of 10 deal requests per entry (get_player called ``players`` times each);
    returns the in-process detector's spiking pairs per interval start."""
    verdicts: dict[int, set[tuple[str, str]]] = {}

    def sink(snap: Snapshot) -> None:
        verdicts[int(snap.start)] = {(h, f) for (h, f, _group) in snap.spikes}

    clock = FakeClock(t0)
    with clock:
        callwatch.configure(config, clock=clock, start_thread=False, strict=True, on_snapshot=sink)
        s = st.Storage()
        for i, n in enumerate(players):
            for _ in range(10):
                with callwatch.request("deal"):
                    s.get_players(1, n)
                    clock.advance(0.001)
            clock.advance(t0 + (i + 1) * INTERVAL - clock.time())
            callwatch.flush()
        callwatch.shutdown()
    return verdicts


def grafana_firing(graphite: Graphite, config: Path, tmp_path: Path, now: int) -> set[str]:
    """The series for which Grafana's spike rule fires: the rule's own query over its own
    time range, the last non-null value of each series above spike_warning (2)."""
    out = tmp_path / "grafana"
    assert main(["grafana", "--config", str(config), "--out", str(out)]) == 0
    query = dict(targets(out))["alert: callwatch: calls per request spike"]
    series = graphite.series(query, now - (N + 2) * INTERVAL, now)
    return {name for name, pts in series.items() if pts and pts[max(pts)] > 2.0}


def run_all(graphite: Graphite, tmp_path: Path, tags: bool,
            history: dict[str, list[int]]) -> tuple[dict[str, bool], alerts.Result, set[str], int]:
    prefix = "sp" + uuid.uuid4().hex[:8]
    t0 = (int(time.time()) - 600) // INTERVAL * INTERVAL
    last = t0 + (len(next(iter(history.values()))) - 1) * INTERVAL
    detector: dict[str, bool] = {}
    configs = {}
    for host, players in history.items():
        configs[host] = write_config(tmp_path, graphite, prefix, host, tags)
        detector[host] = ("deal", "Storage_get_player") in push(configs[host], t0, players)[last]
    config = configs[next(iter(history))]
    now = last + INTERVAL
    deadline = time.monotonic() + 20
    while True:  # until graphite-web has every origin's last interval
        results = alerts.check(load(config, env={}), graphite.web_url, now=now)
        spike = next((r for r in results if r.rule == "spike"), None)
        if spike is not None and spike.values.get("pairs") == len(history) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert spike is not None, results
    return detector, spike, grafana_firing(graphite, config, tmp_path, now), now


@pytest.mark.parametrize("tags", [False, True], ids=["hierarchical", "tagged"])
def test_a_spike_in_one_worker_is_the_same_verdict_everywhere(graphite: Graphite, tmp_path: Path,
                                                               tags: bool) -> None:
    history = {"h1": [2] * 8 + [2], "h2": [2] * 8 + [7], "h3": [2, 3] * 4 + [3]}
    detector, spike, firing, _ = run_all(graphite, tmp_path, tags, history)
    assert detector == {"h1": False, "h2": True, "h3": False}
    assert (spike.status, spike.values["pairs"]) == (alerts.WARNING, 3), spike
    assert (spike.values["origin"], spike.values["handler"], spike.values["function"]) == (
        "h2", "deal", "Storage_get_player")
    assert (spike.values["current"], spike.values["baseline"]) == (7.0, 2.0)
    assert len(firing) == 1, firing
    (name,) = firing
    assert ("h2.handler.deal.watch.Storage_get_player" in name if not tags
            else ";host=h2" in name and ";function=Storage_get_player" in name), name


def test_no_spike_anywhere_is_the_same_verdict_everywhere(graphite: Graphite, tmp_path: Path) -> None:
    history = {"h1": [2] * 9, "h2": [3, 4] * 4 + [5]}  # 5 < 2 x the median 3.5
    detector, spike, firing, _ = run_all(graphite, tmp_path, False, history)
    assert detector == {"h1": False, "h2": False}
    assert spike.status == alerts.OK, spike
    assert firing == set()


def test_a_lasting_spike_clears_only_in_grafana(graphite: Graphite, tmp_path: Path) -> None:
    """spikes.py, difference 1: movingMedian learns from spiking intervals; the definition
    does not, so the detector and alerts check still see the spike."""
    history = {"h1": [2] * 8 + [7] * 5}  # 5 spiking intervals of the last N = 6 in Graphite's window
    detector, spike, firing, _ = run_all(graphite, tmp_path, False, history)
    assert detector == {"h1": True}
    assert spike.status == alerts.WARNING and (spike.values["current"], spike.values["baseline"]) == (7.0, 2.0)
    assert firing == set()  # the median of the last 60 s is 7 now: ratio 1
