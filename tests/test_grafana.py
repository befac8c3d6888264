"""Generated Grafana files: committed copy up to date, structure, and every query run on a
real graphite-web returning data (no Grafana server can run here)."""

from __future__ import annotations

import gc
import json
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

import callwatch
from callwatch.cli import main
from callwatch.grafana import targets
from callwatch.testing import FakeClock

import cwsample.storage as st

from conftest import ROOT, Graphite


def test_committed_files_are_the_output_for_the_example_config(tmp_path: Path) -> None:
    assert main(["grafana", "--config", str(ROOT / "config" / "callwatch.example.yaml"), "--out", str(tmp_path)]) == 0
    committed = ROOT / "grafana"
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated == sorted(p.relative_to(committed) for p in committed.rglob("*")
                               if p.is_file() and p.name != "README.md")
    for rel in generated:
        assert (committed / rel).read_text() == (tmp_path / rel).read_text(), (
            f"grafana/{rel} is stale: run callwatch grafana --config config/callwatch.example.yaml --out grafana")


def test_structure(tmp_path: Path) -> None:
    main(["grafana", "--config", str(ROOT / "config" / "callwatch.example.yaml"), "--out", str(tmp_path)])
    ds = yaml.safe_load((tmp_path / "provisioning/datasources/callwatch.yaml").read_text())
    assert ds["apiVersion"] == 1 and ds["datasources"][0]["type"] == "graphite"
    uid = ds["datasources"][0]["uid"]
    prov = yaml.safe_load((tmp_path / "provisioning/dashboards/callwatch.yaml").read_text())
    assert prov["providers"][0]["type"] == "file"
    uids = set()
    for f in (tmp_path / "dashboards").glob("*.json"):
        d = json.loads(f.read_text())
        assert d["uid"] not in uids and d["title"].startswith("callwatch: ")
        uids.add(d["uid"])
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids))
        for p in d["panels"]:
            assert p["type"] == "timeseries" and p["datasource"]["uid"] == uid and p["targets"]
            assert {"x", "y", "w", "h"} <= set(p["gridPos"])
        assert d["annotations"]["list"][0]["target"]["tags"] == ["callwatch", "spike"]
    alerting = yaml.safe_load((tmp_path / "provisioning/alerting/callwatch.yaml").read_text())
    group = alerting["groups"][0]
    assert alerting["apiVersion"] == 1 and {"orgId", "name", "folder", "interval"} <= set(group)
    rules = group["rules"]
    assert len(rules) == 4
    for r in rules:  # the file-provisioning shape: flat, not the ruler API's grafana_alert
        assert {"uid", "title", "condition", "data", "noDataState", "execErrState", "for"} <= set(r)
        assert r["condition"] == "B" and r["data"][0]["datasourceUid"] == uid
        assert r["data"][1]["model"]["type"] == "classic_conditions"
    assert {r["title"]: r["noDataState"] for r in rules}["callwatch: no data"] == "Alerting"


# Every query of the committed tree (config/callwatch.example.yaml: prefix callwatch, one
# host_worker node), written out by hand from the README's naming layout.
_O, _H = "callwatch.$origin.handler", "callwatch.$origin.handler.$handler"
COMMITTED_TARGETS = [
    ("callwatch-handler.json: Calls per request ($function)",
     f"aliasByNode({_H}.watch.$function.calls_per_request.mean, 5)"),
    ("callwatch-handler.json: Most calls in one request ($function)",
     f"aliasByNode({_H}.watch.$function.calls_per_request.max, 5)"),
    ("callwatch-handler.json: ms per request ($function)", f"aliasByNode({_H}.watch.$function.ms_per_request.mean, 5)"),
    ("callwatch-handler.json: Response time", f"aliasByNode({_H}.response_ms.{{p50,p90,p99,max}}, -1)"),
    ("callwatch-handler.json: Calls per request by dimension ($function)",
     f"aliasByNode({_H}.by.*.*.watch.$function.calls_per_request.mean, 5, 6, 8)"),
    *[(f"callwatch-health.json: {m.replace('_', ' ')}", f"aliasByNode(callwatch.$origin.callwatch.{m}, 1)")
      for m in ("points_sent", "points_dropped", "points_buffered", "flush_ms", "send_errors", "spikes_active")],
    ("callwatch-memory.json: Memory: RSS, USS and PSS (MB), by worker",
     "aliasByNode(callwatch.$origin.process.memory.{rss_mb,uss_mb,pss_mb}, 1, -1)"),
    ("callwatch-memory.json: Leak suspects (census), by worker",
     "aliasByNode(callwatch.$origin.process.memory.leak_suspects, 1)"),
    ("callwatch-memory.json: GC pause, ms per interval, by generation",
     "groupByNodes(callwatch.$origin.process.gc.*.pause_ms, 'sum', 4)"),
    ("callwatch-memory.json: Longest GC pause, by generation",
     "groupByNodes(callwatch.$origin.process.gc.*.pause_ms_max, 'max', 4)"),
    ("callwatch-memory.json: GC ms per request, by handler", f"groupByNodes({_O}.*.gc.ms_per_request.mean, 'avg', 3)"),
    ("callwatch-memory.json: GC share of response time, by handler", f"groupByNodes({_O}.*.gc.share, 'avg', 3)"),
    ("callwatch-memory.json: Objects by type (census, top types)",
     "groupByNodes(callwatch.$origin.process.memory.types.*.count, 'sum', 5)"),
    ("callwatch-overview.json: Requests per second, by handler",
     f"groupByNodes(scaleToSeconds({_O}.*.requests, 1), 'sum', 3)"),
    ("callwatch-overview.json: Errors per second, by handler", f"groupByNodes(scaleToSeconds({_O}.*.errors, 1), 'sum', 3)"),
    ("callwatch-overview.json: p50 response time, by handler", f"groupByNodes({_O}.*.response_ms.p50, 'avg', 3)"),
    ("callwatch-overview.json: p99 response time, by handler (worst worker)",
     f"groupByNodes({_O}.*.response_ms.p99, 'max', 3)"),
    ("callwatch-overview.json: Watched calls per request, by handler and function",
     f"groupByNodes({_O}.*.watch.*.calls_per_request.mean, 'avg', 3, 5)"),
    ("callwatch-overview.json: Share of response time, by handler and group",
     f"groupByNodes({_O}.*.group.*.share, 'avg', 3, 5)"),
    ("callwatch-profiles.json: Profiled functions: cumulative ms per request",
     f"aliasByNode({_H}.profile.*.ms_per_request, 5)"),
    ("callwatch-profiles.json: Profiled functions: calls per request", f"aliasByNode({_H}.profile.*.calls_per_request, 5)"),
    ("callwatch-profiles.json: Profiled requests", f"sumSeries({_H}.profile.requests)"),
    ("alert: callwatch: calls per request spike",
     "divideSeriesLists(removeBelowValue(callwatch.*.handler.*.watch.*.calls_per_request.mean, 3), "
     "movingMedian(callwatch.*.handler.*.watch.*.calls_per_request.mean, '1h'))"),
    ("alert: callwatch: p99 response time", "groupByNodes(callwatch.*.handler.*.response_ms.p99, 'max', 3)"),
    ("alert: callwatch: no data", "sumSeries(callwatch.*.handler.*.requests)"),
    ("alert: callwatch: leak suspects", "aliasByNode(callwatch.*.process.memory.leak_suspects, 1)"),
]


def test_targets_of_the_committed_tree() -> None:
    assert targets(ROOT / "grafana") == COMMITTED_TARGETS


def test_tagged_targets(tmp_path: Path) -> None:
    config = tmp_path / "cw.yaml"
    config.write_text("graphite: {prefix: cw, tags: true}\nnaming: {host: h1}\n")
    assert main(["grafana", "--config", str(config), "--out", str(tmp_path / "out")]) == 0
    got = dict(targets(tmp_path / "out"))
    sel = "'handler=~^${handler:regex}$', 'host=~^${origin:regex}$'"
    assert got["callwatch-overview.json: Watched calls per request, by handler and function"] == (
        "groupByNodes(seriesByTag('name=cw.watch.calls_per_request.mean', 'host=~^${origin:regex}$'), 'avg', "
        "'handler', 'function')")
    assert got["callwatch-handler.json: Response time"] == (
        f"aliasByNode(seriesByTag('name=~^cw[.]response_ms[.](p50|p90|p99|max)$', {sel}), -1)")
    assert got["callwatch-handler.json: Calls per request by dimension ($function)"] == (
        "aliasByNode(seriesByTag('name=cw.by.watch.calls_per_request.mean', 'function=~^${function:regex}$', "
        f"{sel}), 'dimension', 'value', 'function')")
    assert got["callwatch-health.json: flush ms"] == (
        "aliasByNode(seriesByTag('name=cw.callwatch.flush_ms', 'host=~^${origin:regex}$'), 'host', 'worker')")
    assert got["alert: callwatch: calls per request spike"] == (
        "divideSeriesLists(removeBelowValue(seriesByTag('name=cw.watch.calls_per_request.mean'), 3), "
        "movingMedian(seriesByTag('name=cw.watch.calls_per_request.mean'), '1h'))")
    handler_dash = json.loads((tmp_path / "out/dashboards/callwatch-handler.json").read_text())
    assert [v["query"] for v in handler_dash["templating"]["list"]] == [
        "tag_values(host, name=cw.requests)", "tag_values(handler, name=cw.requests)",
        "tag_values(function, name=cw.watch.calls, handler=$handler)"]


@pytest.mark.graphite
def test_every_panel_and_alert_query_returns_data(graphite: Graphite, tmp_path: Path) -> None:
    prefix = "gf" + uuid.uuid4().hex[:8]
    cfg = {"graphite": {"host": "127.0.0.1", "port": graphite.line_port, "prefix": prefix, "interval": 10},
           "naming": {"host": "h1"},
           "watch": [{"target": "cwsample.storage:Storage.get_*", "group": "db"}],
           "profile": {"rate": 1.0, "min_interval": 0, "budget": 1.0},
           "memory": {"census_every": 1}}
    config = tmp_path / "cw.yaml"
    config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "grafana"
    assert main(["grafana", "--config", str(config), "--out", str(out)]) == 0

    t0 = (int(time.time()) - 600) // 10 * 10
    clock = FakeClock(t0)
    with clock:
        callwatch.configure(config, clock=clock, start_thread=False, strict=True)
        s = st.Storage()
        for players in (2, 2, 2, 7, 7):
            for _ in range(6):
                with callwatch.request("deal"):
                    callwatch.dimension("players", players)
                    s.get_players(1, players)
                    gc.collect(0)  # the memory dashboard's GC panels: a collection in each request
                    clock.advance(0.002)
            clock.advance(10)
            callwatch.flush()
        callwatch.shutdown()

    values = {"$origin": "*", "$handler": "deal", "$function": "Storage_get_player"}
    start, end = t0 - 10, t0 + 60

    def render(target: str) -> list[dict[str, object]]:
        for k, v in values.items():
            target = target.replace(k, v)
        q = urllib.parse.urlencode({"target": target, "from": start, "until": end, "format": "json"})
        with urllib.request.urlopen(f"{graphite.web_url}/render?{q}", timeout=10) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    found = targets(out)
    assert len(found) >= 20
    empty: list[str] = []
    deadline = time.monotonic() + 20
    for where, target in found:
        while True:
            series = render(target)
            if any(v is not None for s in series for v, _ in s["datapoints"]):  # type: ignore[union-attr]
                break
            if time.monotonic() > deadline:
                empty.append(f"{where}: {target}")
                break
            time.sleep(0.3)
    assert empty == []

    # known values: calls per request of get_player on the handler dashboard: 2, then 7
    cpr = next(t for w, t in found if w.endswith("Calls per request ($function)"))
    want_cpr = {t0: 2.0, t0 + 10: 2.0, t0 + 20: 2.0, t0 + 30: 7.0, t0 + 40: 7.0}
    deadline = time.monotonic() + 20
    while True:
        (series,) = render(cpr)
        got_cpr = {ts: v for v, ts in series["datapoints"] if v is not None}  # type: ignore[union-attr]
        if got_cpr == want_cpr or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert got_cpr == want_cpr
    by_dim = next(t for w, t in found if "by dimension" in w)
    want = {"players.2.Storage_get_player": [2.0, 2.0, 2.0], "players.7.Storage_get_player": [7.0, 7.0]}
    deadline = time.monotonic() + 20  # the players.7 series is a file carbon makes a moment after the others
    while True:
        got = {s["target"]: [v for v, _ in s["datapoints"] if v is not None]  # type: ignore[union-attr]
               for s in render(by_dim)}
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert got == want
    # the template variables' own queries
    for query in (f"{prefix}.*", f"{prefix}.*.handler.*", f"{prefix}.*.handler.deal.watch.*"):
        with urllib.request.urlopen(f"{graphite.web_url}/metrics/find?query={query}", timeout=10) as r:
            assert json.loads(r.read()), query
