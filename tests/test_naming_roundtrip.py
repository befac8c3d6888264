"""Names round trip (issue 10 §2): an interval goes through the exporter to the real carbon,
then every query of the generated dashboards and alert rules (and every dashboard
variable's query) runs on graphite-web and must return exactly the series it is meant to,
hierarchical and tagged.

The expected series are written out here by hand from the README's naming layout, never
computed by callwatch.naming.
"""

from __future__ import annotations

import gc
import json
import re
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

import callwatch
from callwatch.cli import main
from callwatch.grafana import targets
from callwatch.testing import FakeClock

import cwsample.storage as st

from conftest import Graphite, only_explicit_collections

pytestmark = pytest.mark.graphite

HEALTH = ("points sent", "points dropped", "points buffered", "flush ms", "send errors", "spikes active")
PAIRS = {"deal.Storage_get_player", "deal.Storage_get_table", "login.Storage_get_table"}
BOTH = {"deal", "login"}

# where (dashboard file: panel title, or alert: title) -> the series names it must return,
# for the variables $origin = all, $handler = deal, $function = Storage_get_player
EXPECTED: dict[str, set[str]] = {
    "callwatch-overview.json: Requests per second, by handler": BOTH,
    "callwatch-overview.json: Errors per second, by handler": BOTH,
    "callwatch-overview.json: p50 response time, by handler": BOTH,
    "callwatch-overview.json: p99 response time, by handler (worst worker)": BOTH,
    "callwatch-overview.json: Watched calls per request, by handler and function": PAIRS,
    "callwatch-overview.json: Share of response time, by handler and group": {"deal.db", "login.db"},
    "callwatch-handler.json: Calls per request ($function)": {"Storage_get_player"},
    "callwatch-handler.json: Most calls in one request ($function)": {"Storage_get_player"},
    "callwatch-handler.json: ms per request ($function)": {"Storage_get_player"},
    "callwatch-handler.json: Response time": {"p50", "p90", "p99", "max"},
    "callwatch-handler.json: Calls per request by dimension ($function)": {"players.2.Storage_get_player"},
    "alert: callwatch: p99 response time": BOTH,
    # one collection in each deal request, automatic ones off (send_one_interval)
    "callwatch-memory.json: GC pause, ms per interval, by generation": {"gen0"},
    "callwatch-memory.json: Longest GC pause, by generation": {"gen0"},
    "callwatch-memory.json: GC ms per request, by handler": {"deal"},
    "callwatch-memory.json: GC share of response time, by handler": {"deal"},
}
#: the census's types depend on the test process's heap: these are among them
TYPES = {"dict", "function", "tuple"}
# the origin's name as the health panels show it
ORIGIN = {False: "h1_w0", True: "h1.w0"}
# series whose names are Graphite's function text: the metric paths inside them
RAW = {
    False: {"pairs": {"{p}.h1_w0.handler.deal.watch.Storage_get_player.calls_per_request.mean",
                      "{p}.h1_w0.handler.deal.watch.Storage_get_table.calls_per_request.mean",
                      "{p}.h1_w0.handler.login.watch.Storage_get_table.calls_per_request.mean"}},
    True: {"pairs": {"{p}.watch.calls_per_request.mean;function=Storage_get_player;group=db;handler=deal;host=h1;worker=w0",
                     "{p}.watch.calls_per_request.mean;function=Storage_get_table;group=db;handler=deal;host=h1;worker=w0",
                     "{p}.watch.calls_per_request.mean;function=Storage_get_table;group=db;handler=login;host=h1;worker=w0"}},
}
VARIABLES = {False: {"$origin": "*", "$handler": "deal", "$function": "Storage_get_player"},
             True: {"${origin:regex}": ".*", "${handler:regex}": "deal", "${function:regex}": "Storage_get_player"}}


def send_one_interval(graphite: Graphite, tmp_path: Path, prefix: str, tags: bool) -> tuple[Path, int]:
    cfg = {"graphite": {"host": "127.0.0.1", "port": graphite.line_port, "prefix": prefix, "interval": 10,
                        "tags": tags},
           "naming": {"host": "h1"},
           "watch": [{"target": "cwsample.storage:Storage.get_player", "group": "db"},
                     {"target": "cwsample.storage:Storage.get_table", "group": "db"}],
           "profile": {"rate": 1.0, "min_interval": 0, "budget": 1.0},
           "memory": {"census_every": 1}}
    config = tmp_path / "cw.yaml"
    config.write_text(yaml.safe_dump(cfg))
    t0 = (int(time.time()) - 300) // 10 * 10
    clock = FakeClock(t0)
    with only_explicit_collections(), clock:  # the GC series: only the collections made here
        callwatch.configure(config, clock=clock, start_thread=False, strict=True)
        s = st.Storage()
        for _ in range(3):
            with callwatch.request("deal"):
                callwatch.dimension("players", 2)
                s.get_players(1, 2)
                s.get_table(1)
                gc.collect(0)
                clock.advance(0.002)
        for _ in range(2):
            with callwatch.request("login"):
                s.get_table(1)
                clock.advance(0.001)
        clock.advance(10)
        callwatch.flush()
        callwatch.shutdown()
    return config, t0


def get(graphite: Graphite, path: str, **params: str | list[str]) -> Any:
    with urllib.request.urlopen(f"{graphite.web_url}{path}?{urllib.parse.urlencode(params, doseq=True)}", timeout=10) as r:
        return json.loads(r.read())


def profiled_functions(graphite: Graphite, prefix: str, tags: bool) -> set[str]:
    """The profiled functions of deal, as graphite-web lists them (not as callwatch names them)."""
    if tags:
        series = get(graphite, "/tags/findSeries", expr=[f"name={prefix}.profile.ms_per_request", "handler=deal"])
        return {re.search(r";function=([^;]*)", s).group(1) for s in series}  # type: ignore[union-attr]
    found = get(graphite, "/metrics/find", query=f"{prefix}.h1_w0.handler.deal.profile.*")
    return {n["text"] for n in found if not n["leaf"]}


def variable_values(graphite: Graphite, out: Path, tags: bool) -> dict[str, set[str]]:
    """What each dashboard variable's query lists, asked as Grafana asks graphite-web
    (metrics/find for paths, tags/autoComplete/values for tag_values), $handler = deal."""
    got: dict[str, set[str]] = {}
    for f in sorted((out / "dashboards").glob("*.json")):
        for var in json.loads(f.read_text())["templating"]["list"]:
            query = var["query"].replace("$handler", "deal")
            if tags:
                m = re.fullmatch(r"tag_values\((\w+), (.*)\)", query)
                assert m, query
                values = set(get(graphite, "/tags/autoComplete/values", tag=m.group(1), expr=m.group(2).split(", ")))
            else:
                values = {n["text"] for n in get(graphite, "/metrics/find", query=query)}
            assert got.setdefault(var["name"], values) == values, (f.name, var["name"])
    return got


@pytest.mark.parametrize("tags", [False, True], ids=["hierarchical", "tagged"])
def test_every_dashboard_and_alert_query_matches_its_series(graphite: Graphite, tmp_path: Path,
                                                           tags: bool) -> None:
    prefix = "rt" + uuid.uuid4().hex[:8]
    config, t0 = send_one_interval(graphite, tmp_path, prefix, tags)
    out = tmp_path / "grafana"
    assert main(["grafana", "--config", str(config), "--out", str(out)]) == 0
    start, end = t0 - 10, t0 + 60

    # the exporter wrote what the layout says, under hand-written names
    raw = (f"{prefix}.h1_w0.handler.deal.watch.Storage_get_player.calls_per_request.mean" if not tags else
           f"seriesByTag('name={prefix}.watch.calls_per_request.mean', 'handler=deal', 'function=Storage_get_player')")
    assert graphite.wait_for(raw, start, end, bool) == {t0: 2.0}

    expected = dict(EXPECTED)
    for title in HEALTH:
        expected[f"callwatch-health.json: {title}"] = {ORIGIN[tags]}
    expected["alert: callwatch: leak suspects"] = {ORIGIN[tags]}  # a census at each flush, no suspect
    expected["callwatch-memory.json: Leak suspects (census), by worker"] = {ORIGIN[tags]}
    expected["callwatch-memory.json: Memory: RSS, USS and PSS (MB), by worker"] = {
        f"{ORIGIN[tags]}.{m}" for m in ("rss_mb", "uss_mb", "pss_mb")}
    deadline = time.monotonic() + 30
    while True:  # profile series are many new files: wait until graphite-web lists them all
        functions = profiled_functions(graphite, prefix, tags)
        if any("get_player" in f for f in functions) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert any("get_player" in f for f in functions), functions
    expected["callwatch-profiles.json: Profiled functions: cumulative ms per request"] = functions
    expected["callwatch-profiles.json: Profiled functions: calls per request"] = functions

    def render(target: str) -> dict[str, dict[int, float]]:
        for var, value in VARIABLES[tags].items():
            target = target.replace(var, value)
        return graphite.series(target, start, end)

    found = targets(out)
    special = {"callwatch-profiles.json: Profiled requests", "alert: callwatch: no data",
               "alert: callwatch: calls per request spike", "callwatch-memory.json: Objects by type (census, top types)"}
    assert {w for w, _ in found} == set(expected) | special  # every query is checked below
    wrong: list[str] = []
    for where, target in found:
        if where in special:
            continue
        while True:
            got = {name for name, pts in render(target).items() if pts}
            if got == expected[where] or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        if got != expected[where]:
            wrong.append(f"{where}: {target} -> {sorted(got)}, expected {sorted(expected[where])}")
    assert wrong == []

    by_where = dict(found)
    census = by_where["callwatch-memory.json: Objects by type (census, top types)"]
    types = {name for name, pts in render(census).items() if pts}
    assert TYPES <= types and len(types) <= 2 * 10 + 1, types  # the stable top 10 (at most 2 x 10) and a suspect
    # sums over everything: one series each, with known values (shutdown sends the next,
    # empty interval too)
    assert [pts.get(t0) for pts in render(by_where["alert: callwatch: no data"]).values()] == [5.0]
    assert [pts.get(t0) for pts in render(by_where["callwatch-profiles.json: Profiled requests"]).values()] == [3.0]
    assert render(by_where["callwatch-handler.json: Calls per request by dimension ($function)"]) == {
        "players.2.Storage_get_player": {t0: 2.0}}
    # the spike rule keeps each origin x handler x function apart (one interval: no baseline yet)
    spike = render(by_where["alert: callwatch: calls per request spike"])
    assert variable_values(graphite, out, tags) == {
        "origin": {"h1" if tags else "h1_w0"}, "handler": BOTH, "function": {"Storage_get_player", "Storage_get_table"}}
    inner = {re.match(r"divideSeries\(removeBelowValue\((.*?), ?3\)", name).group(1)  # type: ignore[union-attr]
             for name in spike}
    assert inner == {r.format(p=prefix) for r in RAW[tags]["pairs"]}, list(spike)
