"""naming.Pattern and queries.fields: query patterns from the exporter's layout (unit tests;
tests/test_naming_roundtrip.py runs the generated queries on a real graphite-web)."""

from __future__ import annotations

from callwatch.naming import Pattern
from callwatch.queries import fields


def test_hierarchical_patterns() -> None:
    p = Pattern("cw")
    assert p.watch("calls", handler="deal") == "cw.*.handler.deal.watch.*.calls"
    assert p.watch("share", kind="group", what="db", origin="$origin") == "cw.$origin.handler.*.group.db.share"
    assert p.watch("calls", split=True) == "cw.*.handler.*.by.*.*.watch.*.calls"
    assert p.handler("requests", origin="web1_w0") == "cw.web1_w0.handler.*.requests"
    assert p.profile("requests", "deal", "") == "cw.*.handler.deal.profile.requests"
    assert p.self_metric("flush_ms") == "cw.*.callwatch.flush_ms"
    assert p.nodes("origin", "handler", "function") == "1, 3, 5"
    assert p.nodes("handler", "dimension", "value", "function", split=True) == "3, 5, 6, 8"
    assert p.values("handler") == "cw.*.handler.*"
    assert p.values("function", "$handler") == "cw.*.handler.$handler.watch.*"


def test_dotted_prefix_without_origin() -> None:
    p = Pattern("a.b", origin=False)
    assert p.handler("requests", origin="ignored") == "a.b.handler.*.requests"
    assert p.nodes("origin", "handler", "group") == "3, 5"
    assert p.group(p.handler("errors"), "sum", "handler") == "groupByNodes(a.b.handler.*.errors, 'sum', 3)"
    assert Pattern("").handler("requests") == "*.handler.*.requests"


def test_tagged_patterns() -> None:
    p = Pattern("cw", tags=True)
    assert p.watch("calls", handler="deal") == "seriesByTag('name=cw.watch.calls', 'handler=deal')"
    assert p.handler("response_ms.{p50,max}", handler=p.var("handler")) == (
        "seriesByTag('name=~^cw[.]response_ms[.](p50|max)$', 'handler=~^${handler:regex}$')")
    assert p.handler("requests", origin="web1") == "seriesByTag('name=cw.requests', 'host=web1')"
    assert p.nodes("origin", "handler", "stat") == "'host', 'worker', 'handler', -1"
    assert p.alias(p.self_metric("flush_ms"), "origin") == (
        "aliasByNode(seriesByTag('name=cw.callwatch.flush_ms'), 'host', 'worker')")
    assert Pattern("", tags=True).handler("requests") == "seriesByTag('name=requests')"


def test_fields_of_aliased_names() -> None:
    assert fields("web1_w0.deal.get_player", 3) == ("web1_w0", "deal", "get_player")
    assert fields("h1.w0.deal.get_player", 3) == ("h1.w0", "deal", "get_player")  # tagged: host.worker
    assert fields("h1..deal", 2) == ("h1", "deal")  # tagged, no worker tag
    assert fields("deal.get_player", 3) == ("", "deal", "get_player")  # no origin in the names
