"""The demo's last section: ``callwatch explain`` on deal's 2 -> 7 players change (issue 16).

The truth is read off the game's code (callwatch/demo/game.py), never computed by callwatch:
a deal at a table of n players makes 1 get_table, 1 list_seats, n get_player and n save_hand
calls (group db: 2 + 2n per request) and n Cache_set calls (group cache: n), and sets the
dimension players=n; so with 2 players and then 7, db goes 6 -> 16 calls per request
(get_player and save_hand 2 -> 7, get_table and list_seats unchanged), cache 2 -> 7, and the
players mix goes from all 2 to all 7.  db (ten more sqlite statements per deal) outgrows
cache (five more dict stores) by far, so it is ranked first.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from callwatch.cli import main
from callwatch.config import load
from callwatch.demo import explained as demo_explained
from callwatch.demo import run as demo_run

from conftest import Graphite, TcpReceiver

SMALL, BIG = 2, 7


def deal_truth(n: int) -> dict[str, float]:
    """deal's calls per request at a table of ``n`` (game.deal)."""
    return {"Database_get_table": 1, "Database_list_seats": 1, "Database_get_player": n, "Database_save_hand": n,
            "Cache_set": n}


def groups(calls: dict[str, float]) -> dict[str, float]:
    """The demo config's groups: Database.* in db, Cache.* in cache (none of them nest)."""
    return {"db": sum(v for f, v in calls.items() if f.startswith("Database_")),
            "cache": sum(v for f, v in calls.items() if f.startswith("Cache_"))}


def section(text: str) -> list[str]:
    head = "\n== Why deal got slower (callwatch explain)\n"
    assert head in text, text[-3000:]
    return text.split(head, 1)[1].rstrip("\n").split("\n")


def check_explanation(lines: list[str]) -> None:
    """The lines after the section's source line: the change, db then cache, the mix."""
    before, after = deal_truth(SMALL), deal_truth(BIG)
    gb, ga = groups(before), groups(after)
    grew = sorted(f for f in before if before[f] != after[f])
    assert re.fullmatch(r"   deal: mean \d+\.\d{3} -> \d+\.\d{3} ms \(\+\d+\.\d{3} ms, \+\d+ %\), p99 .*; "
                        r"requests \d+ -> \d+; outside the watched calls [-+]\d+\.\d{3} ms \(-?\d+ %\)", lines[0]), lines
    db = f"   1. group db {gb['db']:.2f} -> {ga['db']:.2f} calls/req (+"
    assert lines[1].startswith(db), lines
    members = re.findall(r"(\w+) (\d+\.\d\d) -> (\d+\.\d\d) calls/req \([-+]\d+\.\d{3} ms/req\)",
                         lines[1].split(": ", 1)[1])
    assert sorted(members) == [(f, f"{before[f]:.2f}", f"{after[f]:.2f}") for f in grew if f.startswith("Database_")]
    assert re.fullmatch(rf"   2\. group cache {gb['cache']:.2f} -> {ga['cache']:.2f} calls/req \(\+\d+\.\d{{3}} ms/req, "
                        rf"\d+ %\): Cache_set {before['Cache_set']:.2f} -> {after['Cache_set']:.2f} calls/req "
                        r"\(\+\d+\.\d{3} ms/req\)", lines[2]), lines
    assert lines[3].startswith(f"   the players dimension's mix: players={BIG} share 0 % -> 100 %, players={SMALL} "
                               "share 100 % -> 0 %: no value of it is in both periods, so `callwatch explain`'s "
                               "table lists this mix first, with all of the change (+"), lines


def test_demo_explains_deal_from_its_in_process_history() -> None:
    out = io.StringIO()
    result = demo_run.run(duration=6, interval=1, threads=2, out=out)
    lines = section(out.getvalue())
    n = [sum(1 for s, p in result.intervals if p == k and "deal" in s.handlers and s.handlers["deal"].requests)
         for k in (SMALL, BIG)]
    assert lines[0] == f"   on this run's in-process history: its {n[0]} intervals of {SMALL} players against " \
                       f"its {n[1]} of {BIG}", lines
    check_explanation(lines[1:5])
    assert lines[5:] == ["   (`make graphite-demo` reads the same back from Graphite, and prints the `callwatch "
                         "explain` command that does)"]
    # the same requests and mean as the demo's own per-phase totals (another code path)
    a, b = result.phases[SMALL]["deal"], result.phases[BIG]["deal"]
    assert f"mean {a.ns / a.requests / 1e6:.3f} -> {b.ns / b.requests / 1e6:.3f} ms" in lines[1]
    assert f"; requests {a.requests} -> {b.requests};" in lines[1]
    why = result.explained
    assert why is not None and why.source == "in-process" and why.command is None and why.lines == lines[1:5]
    assert [r.kind for r in why.explanation.rows][0] == "mix"  # as callwatch explain ranks it
    # the other way round, deal got faster: said so, and the parts that account for it
    back = io.StringIO()
    demo_explained.report(back, demo_explained.Demo(load(demo_run.CONFIG), demo_run.CONFIG, result.intervals,
                                                    (BIG, SMALL), None, None))
    text = section(back.getvalue())
    assert text[2] == "   (its mean did not grow this run: times per request are noisy and under other load on " \
                      "the machine, while the calls per request are exact)", text
    assert text[3].startswith("   1. group db 16.00 -> 6.00 calls/req (-"), text


@pytest.mark.timeout(120)
def test_demo_falls_back_to_the_in_process_history_when_graphite_web_does_not_answer(
        tcp_receiver: TcpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setattr(demo_explained, "READ_BACK_S", 1.0)
    out = io.StringIO()
    result = demo_run.run(duration=6, interval=1, threads=2, out=out, graphite=("127.0.0.1", tcp_receiver.port),
                          graphite_web=f"http://127.0.0.1:{closed}")
    lines = section(out.getvalue())
    assert lines[0].startswith(f"   (not read back from graphite-web: after 1 s, graphite-web at "
                               f"http://127.0.0.1:{closed} unreachable"), lines
    assert lines[1].startswith("   on this run's in-process history: "), lines
    check_explanation(lines[2:6])
    assert lines[6].startswith(f"   the whole table, from Graphite: callwatch explain --config {demo_run.CONFIG} "
                               f"--graphite-web http://127.0.0.1:{closed} --handler deal --before "), lines
    assert result.explained is not None and result.explained.source == "in-process"


@pytest.mark.graphite
@pytest.mark.timeout(180)
def test_demo_reads_its_explanation_back_from_graphite(graphite: Graphite,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    result = demo_run.run(duration=6, interval=1, threads=2, out=out, graphite=("127.0.0.1", graphite.line_port),
                          graphite_web=graphite.web_url)
    lines = section(out.getvalue())
    assert lines[0] == f"   read back from graphite-web at {graphite.web_url}: the {SMALL}-player intervals " \
                       f"against the {BIG}-player ones", lines
    check_explanation(lines[1:5])
    why = result.explained
    assert why is not None and why.source == "graphite-web" and why.note == ""
    # every request and call the process counted, read back
    for mine, theirs in zip(why.in_process, (why.explanation.before, why.explanation.after)):
        assert theirs.requests == mine.requests
        assert {f: round(p.calls * theirs.requests) for f, p in theirs.functions.items()} == \
            {f: round(p.calls * mine.requests) for f, p in mine.functions.items()}
        # (the mean from each interval's mean as sent, not from the summed ns: to 10 ns)
        assert theirs.mean_ms == pytest.approx(mine.mean_ms, abs=1e-5)
    # the printed command line gives the whole table from the same series
    assert lines[5].startswith("   the whole table, from Graphite: callwatch explain "), lines
    cmd = shlex.split(lines[5].split(": ", 1)[1])
    capsys.readouterr()
    assert main(cmd[1:]) == 0
    table = capsys.readouterr().out.split("\n")
    b, a = why.explanation.before, why.explanation.after
    assert table[0].startswith(f"deal: mean {b.mean_ms:.2f} -> {a.mean_ms:.2f} ms ("), table
    assert f"; requests {b.requests:g} -> {a.requests:g}" in table[0]
    assert re.match(rf"\s+\+\d+\.\d\d ms   100 %   mix players={BIG}\s+players={BIG} share 0 % -> 100 %", table[2]), \
        table
    db = groups(deal_truth(SMALL))["db"], groups(deal_truth(BIG))["db"]
    assert any(re.match(rf"\s+\+0\.00 ms     0 %   group db\s+{db[0]:.2f} -> {db[1]:.2f} calls/req", t)
               for t in table), table


INTERVAL_LINE = re.compile(r"^== (\d\d:\d\d:\d\d)-(\d\d:\d\d:\d\d)  table of (\d) players$", re.M)


def _demo_process(env: dict[str, str]) -> str:
    r = subprocess.run([sys.executable, "-m", "callwatch", "demo", "--duration", "9", "--interval", "3",
                        "--no-profile"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.timeout(400)
def test_a_demo_started_in_the_interval_the_last_one_ended_in_keeps_its_tables_apart(tmp_path: Path) -> None:
    """Two demo processes back to back, sharing $TMPDIR (where the default worker-slot
    directory is): the second's 2-player intervals hold no deal of the first's 7-player
    table (the slot hand-off merged the first's last partial interval into the second's
    first one), so its explanation still says db 6 -> 16 calls per request."""
    env = dict(os.environ, TMPDIR=str(tmp_path))
    env.pop("CALLWATCH_GRAPHITE", None)
    for _ in range(4):  # until the second starts within the first's last interval
        first, second = _demo_process(env), _demo_process(env)
        last, head = INTERVAL_LINE.findall(first)[-1], INTERVAL_LINE.findall(second)[0]
        if last[0] == head[0]:
            break
    else:
        pytest.skip("the second demo never started within the interval the first ended in")
    small = [block for block in re.split(r"\n(?===)", second) if re.match(r"== \S+  table of 2 players", block)]
    deal = [m.group(1) for b in small for m in re.finditer(r"^   deal\s+\d+\s+[\d.]+\s+Cache_set\s+(\S+)", b, re.M)]
    assert deal and set(deal) == {f"{deal_truth(SMALL)['Cache_set']:.2f}"}, second
    gb, ga = groups(deal_truth(SMALL)), groups(deal_truth(BIG))
    assert f"\n   1. group db {gb['db']:.2f} -> {ga['db']:.2f} calls/req (+" in second, second


def test_the_printed_command_reads_the_demo_series_under_another_prefix(tmp_path: Path) -> None:
    """``callwatch demo --config FILE`` takes the graphite prefix and tags from FILE: the
    command's config is then a copy of the demo's (its watch list, its groups) with those."""
    import dataclasses

    own = load(demo_run.CONFIG)
    assert demo_explained.config_file(own, demo_run.CONFIG, tmp_path) == demo_run.CONFIG
    other = dataclasses.replace(own, graphite=dataclasses.replace(own.graphite, prefix="shop.demo", tags=True))
    path = demo_explained.config_file(other, demo_run.CONFIG, tmp_path)
    assert path == tmp_path / "callwatch-demo-explain.yaml"
    got = load(path)
    assert (got.graphite.prefix, got.graphite.tags) == ("shop.demo", True)
    assert [(w.target, w.group) for w in got.watch] == [(w.target, w.group) for w in own.watch]
    assert got.host == own.host
    assert demo_explained.command(path, "http://g:8080", (1796677620, 1796677650), (1796677650, 1796677680)) == (
        f"callwatch explain --config {path} --graphite-web http://g:8080 --handler deal "
        "--before 2026-12-07T21:07:00..2026-12-07T21:07:30 --after 2026-12-07T21:07:30..2026-12-07T21:08:00")
