"""Grafana dashboards, alert rules and provisioning files, generated from the config.

Built with grafanalib, the dashboard-as-code library that has Graphite as a first-class
datasource (Grafana's own foundation SDK has no Graphite query type).  Every target comes
from :class:`callwatch.naming.Pattern` (the exporter's own layout, hierarchical or
tagged) and :mod:`callwatch.queries`, so the panels read exactly what the exporter writes;
``$origin`` (host and worker slot; the host tag when tagged) defaults to all, summed or
averaged as each panel says.  The spike alert rule is Graphite's nearest expression of the
spike definition in :mod:`callwatch.spikes`, which lists where it differs.

    callwatch grafana --config callwatch.yaml --out grafana/
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

from .config import Config
from .naming import Pattern
from .queries import Queries
from .spikes import EXPLAIN_TAGS

__all__ = ["DATASOURCE_UID", "generate", "targets"]

DATASOURCE_UID = "callwatch-graphite"
DS = {"type": "graphite", "uid": DATASOURCE_UID}


def _dump(obj: Any) -> str:
    return json.dumps(obj, cls=DashboardEncoder, sort_keys=True, indent=2) + "\n"


def _yaml(obj: Any) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=True, default_flow_style=False)


class _Builder:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.p = Pattern.from_config(cfg)
        self.q = Queries(self.p)
        self.o, self.h, self.f = self.p.var("origin"), self.p.var("handler"), self.p.var("function")
        self.panel_id = 0

    # -- pieces -------------------------------------------------------------------

    def _var(self, name: str, label: str, query: str, every: bool) -> g.Template:
        if every:
            return g.Template(name=name, label=label, query=query, dataSource=DATASOURCE_UID, includeAll=True,
                              multi=True, allValue=".*" if self.p.tags else "*", default="$__all")
        return g.Template(name=name, label=label, query=query, dataSource=DATASOURCE_UID, default="")

    def origin_var(self) -> g.Template:
        return self._var("origin", "host_worker", self.p.values("origin"), True)

    def handler_var(self) -> g.Template:
        return self._var("handler", "handler", self.p.values("handler"), False)

    def function_var(self) -> g.Template:
        return self._var("function", "watched function", self.p.values("function", "$handler"), True)

    def panel(self, title: str, targets: list[str], unit: str = "short", w: int = 12, h: int = 8,
              x: int = 0, y: int = 0, description: str = "") -> g.TimeSeries:
        self.panel_id += 1
        return g.TimeSeries(
            title=title, description=description, dataSource=DS, unit=unit,
            targets=[g.Target(target=t, refId=chr(ord("A") + i), datasource=DS) for i, t in enumerate(targets)],
            gridPos=g.GridPos(h=h, w=w, x=x, y=y), id=self.panel_id,
        )

    @staticmethod
    def annotations(explain_panel: int | None = None) -> g.Annotations:
        """Spike and leak events on every panel; with ``explain_panel``, the response-time
        incidents of ``$handler`` (their text: the explanation, :mod:`callwatch.spikes`) on
        that panel alone."""
        extra = [] if explain_panel is None else [{
            "datasource": DS, "enable": True, "iconColor": "purple", "name": "callwatch explanations",
            "target": {"fromAnnotations": True, "tags": [*EXPLAIN_TAGS, "$handler"], "type": "tags"},
            "filter": {"exclude": False, "ids": [explain_panel]},
        }]
        return g.Annotations(list=[{
            "datasource": DS, "enable": True, "iconColor": "red", "name": "callwatch spikes",
            "target": {"fromAnnotations": True, "tags": ["callwatch", "spike"], "type": "tags"},
        }, {
            "datasource": DS, "enable": True, "iconColor": "orange", "name": "callwatch leak suspects",
            "target": {"fromAnnotations": True, "tags": ["callwatch", "leak"], "type": "tags"},
        }, *extra])

    def dashboard(self, uid: str, title: str, panels: list[g.TimeSeries], templates: list[g.Template],
                  explain_panel: int | None = None) -> Any:
        d = g.Dashboard(title=title, uid=uid, panels=panels, templating=g.Templating(list=templates),
                        annotations=self.annotations(explain_panel), tags=["callwatch"], timezone="utc",
                        time=g.Time("now-1h", "now"), refresh="30s")
        return d.auto_panel_ids().to_json_data()

    # -- dashboards ---------------------------------------------------------------

    def overview(self) -> Any:
        p, o = self.p, self.o
        panels = [
            self.panel("Requests per second, by handler",
                       [p.group(f"scaleToSeconds({p.handler('requests', origin=o)}, 1)", "sum", "handler")],
                       "reqps", x=0, y=0),
            self.panel("Errors per second, by handler",
                       [p.group(f"scaleToSeconds({p.handler('errors', origin=o)}, 1)", "sum", "handler")],
                       "reqps", x=12, y=0),
            self.panel("p50 response time, by handler",
                       [p.group(p.handler("response_ms.p50", origin=o), "avg", "handler")], "ms", x=0, y=8),
            self.panel("p99 response time, by handler (worst worker)",
                       [p.group(p.handler("response_ms.p99", origin=o), "max", "handler")], "ms", x=12, y=8),
            self.panel("Watched calls per request, by handler and function",
                       [p.group(p.watch("calls_per_request.mean", origin=o), "avg", "handler", "function")],
                       "short", x=0, y=16, w=24,
                       description="The mean over workers; a jump here is an N+1 that shipped or a cache "
                                   "that stopped hitting."),
            self.panel("Share of response time, by handler and group",
                       [p.group(p.watch("share", origin=o, kind="group"), "avg", "handler", "group")],
                       "percent", x=0, y=24, w=24),
        ]
        return self.dashboard("callwatch-overview", "callwatch: overview", panels, [self.origin_var()])

    def handler(self) -> Any:
        p, o, h, f = self.p, self.o, self.h, self.f

        def per_function(metric: str) -> list[str]:
            return [p.alias(p.watch(metric, h, f, o), "function")]

        by_dim = p.watch("calls_per_request.mean", h, f, o, split=True)
        panels = [
            self.panel("Calls per request ($function)", per_function("calls_per_request.mean"), x=0, y=0),
            self.panel("Most calls in one request ($function)", per_function("calls_per_request.max"), x=12, y=0),
            self.panel("ms per request ($function)", per_function("ms_per_request.mean"), "ms", x=0, y=8),
            self.panel("Response time",
                       [p.alias(p.handler("response_ms.{p50,p90,p99,max}", h, o), "stat")], "ms", x=12, y=8,
                       description="Purple marks: response-time incidents, each with its explanation "
                                   "(callwatch explain)."),
            self.panel("Calls per request by dimension ($function)",
                       [p.alias(by_dim, "dimension", "value", "function", split=True)], x=0, y=16, w=24,
                       description="Split by callwatch.dimension(), e.g. players: 2 vs 7."),
        ]
        return self.dashboard("callwatch-handler", "callwatch: handler", panels,
                              [self.origin_var(), self.handler_var(), self.function_var()],
                              explain_panel=panels[3].id)

    def profiles(self) -> Any:
        p, o, h = self.p, self.o, self.h
        panels = [
            self.panel("Profiled functions: cumulative ms per request",
                       [p.alias(p.profile("ms_per_request", h, origin=o), "function")], "ms", x=0, y=0, w=24),
            self.panel("Profiled functions: calls per request",
                       [p.alias(p.profile("calls_per_request", h, origin=o), "function")], x=0, y=8, w=24),
            self.panel("Profiled requests", [f"sumSeries({p.profile('requests', h, '', o)})"], x=0, y=16, w=24),
        ]
        return self.dashboard("callwatch-profiles", "callwatch: profiled functions", panels,
                              [self.origin_var(), self.handler_var()])

    def health(self) -> Any:
        panels = []
        for i, (metric, unit) in enumerate((("points_sent", "short"), ("points_dropped", "short"),
                                            ("points_buffered", "short"), ("flush_ms", "ms"),
                                            ("send_errors", "short"), ("spikes_active", "short"))):
            target = self.p.self_metric(metric, origin=self.o)
            if self.p.origin or self.p.tags:
                target = self.p.alias(target, "origin")
            panels.append(self.panel(metric.replace("_", " "), [target], unit, x=12 * (i % 2), y=8 * (i // 2)))
        return self.dashboard("callwatch-health", "callwatch: health", panels, [self.origin_var()])

    def memory(self) -> Any:
        """``memory:``'s series: the process's memory, GC per generation and per handler, the
        census (empty panels without ``memory:``)."""
        p, o = self.p, self.o
        gen, typ = p.process_node("generation"), p.process_node("type")

        def by_origin(metric: str, *fields: str) -> str:
            target = p.process(metric, origin=o)
            return p.alias(target, "origin", *fields) if self.p.origin or self.p.tags else target

        def by_generation(metric: str, agg: str) -> str:
            return f"groupByNodes({p.process(metric, origin=o)}, '{agg}', {gen})"

        panels = [
            self.panel("Memory: RSS, USS and PSS (MB), by worker",
                       [by_origin("memory.{rss_mb,uss_mb,pss_mb}", "stat")], "decmbytes", x=0, y=0),
            self.panel("Leak suspects (census), by worker", [by_origin("memory.leak_suspects")], x=12, y=0,
                       description="Types whose count reached a new high at each of the last leak_window "
                                   "censuses; process.memory.types.<type>.suspect says which."),
            self.panel("GC pause, ms per interval, by generation", [by_generation("gc.*.pause_ms", "sum")], "ms",
                       x=0, y=8),
            self.panel("Longest GC pause, by generation", [by_generation("gc.*.pause_ms_max", "max")], "ms",
                       x=12, y=8),
            self.panel("GC ms per request, by handler",
                       [p.group(p.handler("gc.ms_per_request.mean", origin=o), "avg", "handler")], "ms", x=0, y=16),
            self.panel("GC share of response time, by handler",
                       [p.group(p.handler("gc.share", origin=o), "avg", "handler")], "percent", x=12, y=16),
            self.panel("Objects by type (census, top types)",
                       [f"groupByNodes({p.process('memory.types.*.count', origin=o)}, 'sum', {typ})"], x=0, y=24,
                       w=24),
        ]
        return self.dashboard("callwatch-memory", "callwatch: memory and GC", panels, [self.origin_var()])

    # -- alerts -------------------------------------------------------------------

    def alert_queries(self) -> dict[str, str]:
        a = self.cfg.alerts
        return {
            "callwatch: calls per request spike": self.q.spike_ratio(a.spike_floor, a.baseline),
            "callwatch: p99 response time": self.q.p99_by_handler(),
            "callwatch: no data": self.q.requests_total(),
            "callwatch: leak suspects": self.q.leak_suspects_by_origin(),
        }

    def alert_rules(self) -> Any:
        a = self.cfg.alerts
        thresholds = {
            "callwatch: calls per request spike": (a.spike_warning, "gt"),
            "callwatch: p99 response time": (a.p99_warning_ms, "gt"),
            "callwatch: no data": (-1.0, "lt"),  # never on values: fires on no data
            "callwatch: leak suspects": (0.0, "gt"),
        }
        rules = []
        for title, query in self.alert_queries().items():
            value, op = thresholds[title]
            rules.append(g.AlertRulev9(
                title=title, uid=title.split(": ")[1].replace(" ", "-")[:40],
                triggers=[
                    g.Target(target=query, refId="A", datasource=DATASOURCE_UID),
                    # a classic condition: the last value of any series of A against the threshold
                    g.AlertExpression(refId="B", expressionType=g.EXP_TYPE_CLASSIC, expression="A",
                                      conditions=[g.AlertCondition(
                                          evaluator=g.GreaterThan(value) if op == "gt" else g.LowerThan(value),
                                          operator=g.OP_AND, reducerType=g.RTYPE_LAST)]),
                ],
                condition="B", evaluateFor="5m", timeRangeFrom=int(_seconds(a.baseline) + _seconds(a.window)),
                noDataAlertState="Alerting" if title.endswith("no data") else "OK",
                errorAlertState="Alerting", labels={"team": "callwatch"},
                annotations={"summary": title},
            ))
        group = g.AlertGroup(name="callwatch", rules=rules, folder="callwatch", evaluateInterval="1m")
        api = json.loads(_dump(g.AlertFileBasedProvisioning(groups=[group]).to_json_data()))
        # grafanalib writes rules in the ruler API's shape (nested under grafana_alert);
        # file provisioning wants them flat (Grafana docs, "file provisioning", alert rules).
        out_groups = []
        for grp in api["groups"]:
            flat = []
            for r in grp["rules"]:
                ga = r["grafana_alert"]
                flat.append({"uid": r["uid"], "title": ga["title"], "condition": ga["condition"],
                             "data": ga["data"], "noDataState": ga["no_data_state"],
                             "execErrState": ga["exec_err_state"], "for": r["for"],
                             "annotations": r["annotations"], "labels": r["labels"]})
            out_groups.append({"orgId": 1, "name": grp["name"], "folder": grp["folder"],
                               "interval": grp["interval"], "rules": flat})
        return {"apiVersion": 1, "groups": out_groups}


def _seconds(period: str) -> int:
    from .alerts import seconds

    return seconds(period)


def generate(cfg: Config, out: Path, graphite_web: str = "http://127.0.0.1:8080") -> list[Path]:
    """Write the provisioning tree under ``out``; returns the files written."""
    b = _Builder(cfg)
    files: dict[str, str] = {
        "provisioning/datasources/callwatch.yaml": _yaml({"apiVersion": 1, "datasources": [{
            "name": "callwatch Graphite", "type": "graphite", "uid": DATASOURCE_UID, "access": "proxy",
            "url": graphite_web, "jsonData": {"graphiteVersion": "1.1"}}]}),
        "provisioning/dashboards/callwatch.yaml": _yaml({"apiVersion": 1, "providers": [{
            "name": "callwatch", "folder": "callwatch", "type": "file", "disableDeletion": False,
            "options": {"path": "/var/lib/grafana/dashboards/callwatch"}}]}),
        "provisioning/alerting/callwatch.yaml": _yaml(b.alert_rules()),
        "dashboards/callwatch-overview.json": _dump(b.overview()),
        "dashboards/callwatch-handler.json": _dump(b.handler()),
        "dashboards/callwatch-profiles.json": _dump(b.profiles()),
        "dashboards/callwatch-health.json": _dump(b.health()),
        "dashboards/callwatch-memory.json": _dump(b.memory()),
    }
    written = []
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def targets(out: Path) -> list[tuple[str, str]]:
    """(where, target) of every panel and alert query in a generated tree."""
    found: list[tuple[str, str]] = []
    for f in sorted((out / "dashboards").glob("*.json")):
        for panel in json.loads(f.read_text())["panels"]:
            for t in panel.get("targets", []):
                found.append((f"{f.name}: {panel['title']}", t["target"]))
    import yaml

    alerting = yaml.safe_load((out / "provisioning/alerting/callwatch.yaml").read_text())
    for group in alerting["groups"]:
        for rule in group["rules"]:
            for d in rule["data"]:
                if "target" in d.get("model", {}):
                    found.append((f"alert: {rule['title']}", d["model"]["target"]))
    return found
