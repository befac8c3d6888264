"""The in-process part of issue 16: a handler's mean response time judged by the spike rule
at each flush; at an incident's start, one Graphite event whose text is the explanation,
found by the generated handler dashboard's annotation query (real graphite-web).  And the
failures it must survive: graphite-web down, or the explanation itself failing."""

from __future__ import annotations

import json
import socket
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

import callwatch
from callwatch import spikes
from callwatch.cli import main
from callwatch.testing import FakeClock, RecordingSender

from conftest import Graphite

CLOCK = FakeClock()


class Db:
    """Watched: each read takes ``ms`` of the fake clock."""

    def get_user(self, ms: float) -> None:
        CLOCK.advance(ms / 1000)


def config(handler: str, web_url: str | None) -> dict[str, Any]:
    return {"graphite": {"interval": 10, "prefix": "inc", "web_url": web_url},
            "naming": {"host": "h1"},
            "watch": [{"target": "test_explain_incident:Db.get_user"}],
            "spikes": {"factor": 2.0, "baseline_intervals": 5, "min_requests": 5}}


def run(handler: str, web_url: str | None, reads: list[int], t0: int,
        sevens: list[int] | None = None) -> RecordingSender:
    """One interval of 10 requests per entry: ``reads`` x 1 ms get_user + 2 ms of its own;
    with ``sevens``, that many of the interval's requests are players=7 ones (7 reads) and
    the others players=2 (2 reads)."""
    global CLOCK
    CLOCK = FakeClock(t0)
    sender = RecordingSender()
    db = Db()
    with CLOCK:
        callwatch.configure(config(handler, web_url), sender=sender, clock=CLOCK, start_thread=False,
                            strict=True)
        for i, n in enumerate(reads):
            for j in range(10):
                with callwatch.request(handler):
                    if sevens is not None:
                        n = 7 if j < sevens[i] else 2
                        callwatch.dimension("players", n)
                    for _ in range(n):
                        db.get_user(1.0)
                    CLOCK.advance(0.002)
            CLOCK.advance(t0 + (i + 1) * 10 - CLOCK.time())
            callwatch.flush()
        callwatch.shutdown()
    return sender


def test_one_warning_per_incident_with_the_explanation(caplog: pytest.LogCaptureFixture) -> None:
    # 4 ms, 4 ms, 4 ms (the baseline), then 9 ms twice (one incident), 4 ms, then 9 ms again
    run("login", None, [2, 2, 2, 7, 7, 2, 7], 1_700_000_000)
    said = [r.getMessage() for r in caplog.records if "response-time incident" in r.getMessage()]
    text = ("callwatch: response-time incident: login mean +125 % (4.0 -> 9.0 ms), p99 +125 % (4.0 -> 9.0 ms): "
            "Db_get_user 2.00 -> 7.00 calls/req (+5.0 ms/req)")
    assert said == [text, text], said  # the 4th interval and the 7th: two incidents, not three


def test_an_incident_from_a_mix_shift_says_so(caplog: pytest.LogCaptureFixture) -> None:
    # 1 in 10 requests is a 7-player one (9 ms, the others 4 ms): mean 4.5 ms; then all 10 are: 9 ms.
    # mix: Δs (-0.9, +0.9) x t̄ (4, 9) = +4.5 ms, all of the change; nothing grew within a value
    run("deal", None, [0] * 5, 1_700_000_000, sevens=[1, 1, 1, 1, 10])
    (said,) = [r.getMessage() for r in caplog.records if "response-time incident" in r.getMessage()]
    assert said.startswith("callwatch: response-time incident: deal mean +100 % (4.5 -> 9.0 ms), p99 "), said
    assert said.endswith(": players=7 share 10 % -> 100 %, players=2 share 90 % -> 0 %"), said


def test_graphite_web_down_neither_raises_nor_hangs(caplog: pytest.LogCaptureFixture) -> None:
    srv = socket.socket()  # accepts and never answers
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    try:
        started = time.monotonic()
        run("login", f"http://127.0.0.1:{srv.getsockname()[1]}", [2, 2, 2, 7], 1_700_000_000)
        took = time.monotonic() - started
    finally:
        srv.close()
    assert took < 10, took  # post_event's 2 s timeout, once
    assert any("cannot post the event" in r.getMessage() for r in caplog.records)


def test_a_failing_explanation_is_logged_not_raised(monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(spikes.SpikeDetector, "_incident", boom)
    sender = run("login", None, [2, 2, 2, 7], 1_700_000_000)
    assert any("judging response times failed" in r.getMessage() for r in caplog.records)
    assert b"inc.h1_w0.handler.login.requests 10 1700000030" in sender.data  # the flush went on


@pytest.mark.graphite
def test_the_event_is_posted_once_and_the_dashboard_annotation_finds_it(graphite: Graphite,
                                                                         tmp_path: Path) -> None:
    handler = "login" + uuid.uuid4().hex[:8]  # no other test's events
    t0 = (int(time.time()) - 600) // 10 * 10
    run(handler, graphite.web_url, [2, 2, 2, 7, 7, 7], t0)
    out = tmp_path / "grafana"
    assert main(["grafana", "--config", str(write_example(tmp_path)), "--out", str(out)]) == 0
    dash = json.loads((out / "dashboards/callwatch-handler.json").read_text())
    (ann,) = [a for a in dash["annotations"]["list"] if a["name"] == "callwatch explanations"]
    panel = next(p for p in dash["panels"] if p["title"] == "Response time")
    assert ann["filter"] == {"exclude": False, "ids": [panel["id"]]}
    # the query as Grafana's Graphite datasource makes it: tags joined, $handler replaced
    tags = " ".join(ann["target"]["tags"]).replace("$handler", handler)
    q = urllib.parse.urlencode({"from": t0 - 60, "until": t0 + 120, "tags": tags})
    with urllib.request.urlopen(f"{graphite.web_url}/events/get_data?{q}", timeout=10) as r:
        evs = json.loads(r.read())
    assert len(evs) == 1, evs
    assert evs[0]["what"] == (f"{handler} mean +125 % (4.0 -> 9.0 ms), p99 +125 % (4.0 -> 9.0 ms): "
                              "Db_get_user 2.00 -> 7.00 calls/req (+5.0 ms/req)")
    assert evs[0]["when"] == t0 + 30 and set(evs[0]["tags"]) == {"callwatch", "explain", handler}
    data = json.loads(evs[0]["data"])
    assert data["rows"][0]["name"] == "Db_get_user" and data["rows"][0]["contribution_ms"] == pytest.approx(5.0)


def write_example(tmp_path: Path) -> Path:
    p = tmp_path / "example.yaml"
    p.write_text("graphite: {prefix: inc}\n")
    return p
