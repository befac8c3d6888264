"""``callwatch explain`` against the real carbon-cache and graphite-web (issue 16's Done-when).

The data goes through the real pipeline: callwatch configured against the test's carbon,
on a FakeClock so every watched call and request takes exactly the time the test says,
from three origins (hosts h1, h2, h3: one process each, ``naming.worker: none``, as the
spike consistency test does; a worker slot's hand-off of its last interval would merge one
run into the next) with different loads.
Four handlers, one per case: a watched function called more, one slower per call, a
dimension's mix shifted, and no change.  The truth (each case's change of the mean, and
the part that should explain it) is computed here from the requests the test made, never
by callwatch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import callwatch
from callwatch import _core, _runtime
from callwatch.cli import main
from callwatch.testing import FakeClock

from conftest import ROOT, Graphite

pytestmark = pytest.mark.graphite

INTERVAL = 10
CLOCK = FakeClock()  # the current origin's (push)


class Backend:
    """Watched (by this module's path): each call takes ``ms`` of the fake clock."""

    def get_player(self, ms: float) -> None:
        CLOCK.advance(ms / 1000)

    def render(self, ms: float) -> None:
        CLOCK.advance(ms / 1000)


@dataclass(frozen=True)
class Req:
    """One request: get_player ``calls`` x ``call_ms``, render ``render_ms``, players."""

    calls: int
    call_ms: float
    render_ms: float = 3.0
    players: int | None = None

    @property
    def ms(self) -> float:
        return self.calls * self.call_ms + self.render_ms


def load(n: int, after: bool) -> dict[str, list[Req]]:
    """Each handler's requests in one interval of one origin (n: the origin's load)."""
    mix_7 = (6 if after else 1) * n  # players=7 requests: 10 % -> 60 %
    return {
        "more": [Req(7 if after else 2, 1.0)] * 10 * n,
        "slower": [Req(2, 3.5 if after else 1.0)] * 10 * n,
        "mix": [Req(7, 1.0, players=7)] * mix_7 + [Req(2, 1.0, players=2)] * (10 * n - mix_7),
        "same": [Req(3, 1.0)] * 10 * n,
    }


LOADS = {"h1": 1, "h2": 2, "h3": 3}  # three origins, 10, 20 and 30 requests per interval


def write_config(tmp_path: Path, graphite: Graphite, prefix: str, host: str, tags: bool) -> Path:
    p = tmp_path / f"{host}.yaml"
    p.write_text(yaml.safe_dump({
        "graphite": {"host": "127.0.0.1", "port": graphite.line_port, "prefix": prefix, "interval": INTERVAL,
                     "tags": tags},
        "naming": {"host": host, "worker": "none"},
        "watch": [{"target": "test_explain_graphite:Backend.get_player", "group": "db"},
                  {"target": "test_explain_graphite:Backend.render"}],
        "spikes": {"enabled": False},
    }))
    return p


def push(config: Path, n: int, t0: int) -> None:
    """Three intervals before, three after, from one origin."""
    global CLOCK
    backend = Backend()
    CLOCK = FakeClock(t0)  # each origin's own, from the same start
    with CLOCK:
        callwatch.configure(config, clock=CLOCK, start_thread=False, strict=True)
        for i in range(6):
            for handler, reqs in load(n, after=i >= 3).items():
                for r in reqs:
                    with callwatch.request(handler):
                        if r.players is not None:
                            callwatch.dimension("players", r.players)
                        for _ in range(r.calls):
                            backend.get_player(r.call_ms)
                        backend.render(r.render_ms)
            CLOCK.advance(t0 + (i + 1) * INTERVAL - CLOCK.time())
            callwatch.flush()
        callwatch.shutdown()
    # the next origin starts again at t0, in this process: as a new process would, it must
    # not find this one's interval (conftest resets the same between tests)
    _core.collector.reset()
    _runtime._last_partial = None


def truth(handler: str, after: bool) -> float:
    """The mean response time of every request the test made in the period, ms."""
    reqs = [r for n in LOADS.values() for r in load(n, after)[handler]]
    return sum(r.ms for r in reqs) / len(reqs)


@pytest.fixture(scope="module", params=[False, True], ids=["hierarchical", "tagged"])
def pushed(request: pytest.FixtureRequest, graphite: Graphite,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    tmp_path = tmp_path_factory.mktemp("explain")
    prefix = "ex" + uuid.uuid4().hex[:8]
    t0 = (int(time.time()) - 600) // INTERVAL * INTERVAL
    config = Path()
    for host, n in LOADS.items():
        config = write_config(tmp_path, graphite, prefix, host, request.param)
        push(config, n, t0)
    return config, t0


def explain(graphite: Graphite, config: Path, t0: int, handler: str,
            capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """``callwatch explain --json``, polled until graphite-web has every origin's every
    interval (all requests counted, and the watched series of both periods there)."""
    args = ["explain", "--config", str(config), "--graphite-web", graphite.web_url, "--handler", handler,
            "--before", f"{t0}..{t0 + 3 * INTERVAL}", "--after", f"{t0 + 3 * INTERVAL}..{t0 + 6 * INTERVAL}",
            "--json"]
    want = 3 * 10 * sum(LOADS.values())
    deadline = time.monotonic() + 30
    while True:
        code = main(args)
        out, err = capsys.readouterr()
        got = json.loads(out) if code == 0 else []
        # every series there: a new one (a tagged one, most) shows up ~1 s after its first point
        done = bool(got) and all(e["requests"] == [want, want] and min(e["mean_ms"]) > 0 and None not in e["p99_ms"]
                                 and len(e["rows"]) == (4 if e["handler"] == "mix" else 3) for e in got)
        if done or time.monotonic() > deadline:
            assert code == 0, err
            assert done, got
            return got
        time.sleep(0.5)


def within_10pct(got: float, expected: float) -> bool:
    return abs(got - expected) <= 0.1 * abs(expected)


@pytest.mark.parametrize("handler, first", [("more", ("group", "db")), ("slower", ("group", "db")),
                                            ("mix", ("mix", "players=7"))])
def test_the_cause_is_ranked_first(graphite: Graphite, pushed: tuple[Path, int], capsys: pytest.CaptureFixture[str],
                                   handler: str, first: tuple[str, str]) -> None:
    config, t0 = pushed
    (e,) = explain(graphite, config, t0, handler, capsys)
    delta = truth(handler, True) - truth(handler, False)
    assert delta > 1.0  # the case changes something
    assert within_10pct(e["mean_ms"][0], truth(handler, False)) and within_10pct(e["mean_ms"][1], truth(handler, True))
    top = e["rows"][0]
    assert (top["kind"], top["name"]) == first, e["rows"]
    assert within_10pct(top["contribution_ms"], delta), (top, delta)
    assert within_10pct(top["percent"], 100.0), top
    if handler == "more":
        assert top["calls_per_request"] == [2.0, 7.0] and "Backend_get_player" in top["detail"]
    if handler == "mix":
        assert top["detail"].startswith("players=7 share 10 % -> 60 %"), top
        db = next(r for r in e["rows"] if r["name"] == "db")
        assert abs(db["contribution_ms"]) < 0.1 * delta  # no growth within a value


def test_no_change_explains_nothing(graphite: Graphite, pushed: tuple[Path, int],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    config, t0 = pushed
    (e,) = explain(graphite, config, t0, "same", capsys)
    assert abs(e["delta_ms"]) < 0.01 and all(abs(r["contribution_ms"]) < 0.01 for r in e["rows"]), e
    assert e["summary"].endswith("no watched part explains it")


def test_all_ranks_the_handlers_and_the_command_runs(graphite: Graphite, pushed: tuple[Path, int],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config, t0 = pushed
    explain(graphite, config, t0, "all", capsys)  # until every handler's data is there
    deltas = {h: truth(h, True) - truth(h, False) for h in ("more", "slower", "mix", "same")}
    got = subprocess.run([sys.executable, "-m", "callwatch", "explain", "--config", str(config), "--graphite-web",
                          graphite.web_url, "--handler", "all", "--before", f"{t0}..{t0 + 30}",
                          "--after", f"{t0 + 30}..{t0 + 60}"], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert got.returncode == 0, got.stderr
    order = [line.split(":")[0] for line in got.stdout.splitlines() if line and not line.startswith(" ")]
    assert order == sorted(deltas, key=lambda h: -abs(deltas[h])), got.stdout
    assert "mix players=7" in got.stdout and "unexplained" in got.stdout


@pytest.mark.parametrize("args, says", [
    (["--handler", "nosuch"], "--handler nosuch: no requests of it"),
    (["--before", "14:00..13:00"], "--before '14:00..13:00' ends before it starts"),
    (["--graphite-web", "http://127.0.0.1:9"], "--graphite-web http://127.0.0.1:9: graphite-web at"),
])
def test_bad_input_is_one_clear_error(graphite: Graphite, pushed: tuple[Path, int],
                                      capsys: pytest.CaptureFixture[str], args: list[str], says: str) -> None:
    config, t0 = pushed
    base = {"--config": str(config), "--graphite-web": graphite.web_url, "--handler": "more",
            "--before": f"{t0}..{t0 + 30}", "--after": f"{t0 + 30}..{t0 + 60}"}
    base.update(dict(zip(args[::2], args[1::2])))
    code = main(["explain", *[x for kv in base.items() for x in kv]])
    out, err = capsys.readouterr()
    assert code == 2 and says in err and "Fix:" in err and err.count("\n") <= 2, err


def test_profiled_functions_weighted_by_profiled_requests(graphite: Graphite, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Profile series written to carbon's plaintext port under names from naming.Namer (the
    profiler is not run here): two origins with 2 and 4 profiled requests per interval; the
    function's ms per profiled request, weighted by them, is (2 x 4 + 4 x 1) / 6 = 2.0 before
    and (2 x 10 + 4 x 1) / 6 = 4.0 after: +2.0, listed apart, not summed."""
    import socket as so

    from callwatch.naming import Namer, sanitize

    prefix = "pf" + uuid.uuid4().hex[:8]
    t0 = (int(time.time()) - 600) // INTERVAL * INTERVAL
    fn = sanitize("db.py:3(get)")
    lines = []
    for host, profiled, ms in (("h1", 2, (4.0, 10.0)), ("h2", 4, (1.0, 1.0))):
        n = Namer(prefix, host, worker="w0")
        for i in range(6):
            t, after = t0 + i * INTERVAL, i >= 3
            for name, value in ((n.handler_metric("deal", "requests")[0], 10),
                                (n.handler_metric("deal", "response_ms.mean")[0], 7.0 if after else 5.0),
                                (n.handler_metric("deal", "response_ms.p99")[0], 9.0),
                                (n.profile_metric("deal", "", "requests")[0], profiled),
                                (n.profile_metric("deal", fn, "ms_per_request")[0], ms[after]),
                                (n.profile_metric("deal", fn, "calls_per_request")[0], 2.0)):
                lines.append(f"{name} {value} {t}\n")
    with so.create_connection(("127.0.0.1", graphite.line_port), timeout=10) as s:
        s.sendall("".join(lines).encode())
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"graphite": {"prefix": prefix}}))
    args = ["explain", "--config", str(config), "--graphite-web", graphite.web_url, "--handler", "deal",
            "--before", f"{t0}..{t0 + 30}", "--after", f"{t0 + 30}..{t0 + 60}", "--json"]
    deadline = time.monotonic() + 30
    while True:
        code = main(args)
        out, err = capsys.readouterr()
        e = json.loads(out)[0] if code == 0 else {}
        if (e and e["profiled"] and e["requests"] == [60, 60] and e["mean_ms"] == [5.0, 7.0]
                and e["profiled"][0]["after"] == pytest.approx(4.0)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert code == 0, err
    (row,) = e["profiled"]
    assert (row["name"], row["before"], row["after"]) == (fn, pytest.approx(2.0), pytest.approx(4.0)), row
    assert row["contribution_ms"] == pytest.approx(2.0) and row["percent"] == pytest.approx(100.0)
    assert [r["kind"] for r in e["rows"]] == ["unexplained"] and e["rows"][0]["contribution_ms"] == 2.0
