"""The command line: in-process through main(), and once through a real subprocess."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from callwatch.cli import main
from callwatch.demo import run as demo_run

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def test_check_config_valid(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "cw.yaml"
    p.write_text("graphite: {host: 127.0.0.1}\nwatch:\n  - {target: 'cwsample.storage:Storage.get_*', group: db}\n")
    assert main(["check-config", str(p), "--path", str(TESTS)]) == 0
    out = capsys.readouterr().out
    assert f"{p}:3: cwsample.storage:Storage.get_table -> method Storage.get_table, metric 'Storage_get_table', " \
           "group 'db'" in out
    assert out.rstrip().endswith(f"{p}: valid, 5 function(s) and 0 preset(s) watched")


def test_check_config_invalid_exits_2_with_located_messages(capsys: pytest.CaptureFixture[str],
                                                            tmp_path: Path) -> None:
    p = tmp_path / "cw.yaml"
    p.write_text("watch:\n  - cwsample.storage:get_usr\n  - cwsample.storage:*.zap*\n")
    assert main(["check-config", str(p), "--path", str(TESTS)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{p}:2: target: 'cwsample.storage' has no attribute 'get_usr'")
    assert err[1].startswith(f"{p}:3: target: the glob 'cwsample.storage:*.zap*' matches no function")
    assert err[2] == f"{p}: 2 problem(s); not valid"


def test_check_config_yaml_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    p = tmp_path / "cw.yaml"
    p.write_text("graphite:\n  port: [\n")
    assert main(["check-config", str(p)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith(f"{p}:3: YAML syntax error")


def test_check_config_through_a_real_subprocess() -> None:
    r = subprocess.run([sys.executable, "-m", "callwatch", "check-config",
                        str(ROOT / "config" / "callwatch.example.yaml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "valid, 7 function(s) and 1 preset(s) watched" in r.stdout
    r = subprocess.run([sys.executable, "-m", "callwatch", "check-config", "/nonexistent.yaml"],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr.splitlines()[0]) == (
        2, "/nonexistent.yaml: file not found. Fix: check the path, or set CALLWATCH_CONFIG to the right file")


def test_version_flag_prints_the_version_from_pyproject() -> None:
    import tomllib
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    r = subprocess.run([sys.executable, "-m", "callwatch", "--version"],
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"callwatch {expected}\n", "")


def test_demo_what_grew_needs_both_the_ratio_and_the_absolute_change() -> None:
    G = demo_run.Growth
    assert [G("h", "f", b, a).grew for b, a in
            [(2.0, 7.0), (0.0, 0.5), (0.0, 0.49), (1.0, 1.49), (1.0, 1.5), (0.01, 0.0186), (10.0, 14.0)]] == \
        [True, True, False, False, True, False, False]


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "check-config" in capsys.readouterr().err


def test_demo_shows_the_calls_that_grow_with_the_table() -> None:
    out = io.StringIO()
    result = demo_run.run(duration=6, interval=1, threads=2, out=out)
    growth = {(g.handler, g.function): (g.before, g.after) for g in result.growth}
    # exact per-request numbers of the card game: these depend only on the table size
    assert growth[("deal", "Database_get_player")] == (2.0, 7.0)
    assert growth[("deal", "Database_save_hand")] == (2.0, 7.0)
    assert growth[("play", "Cache_get")][1] >= 7.0
    # join_table reads the players already seated (0..n-1: 0.5 and 3.0 per request over whole
    # rounds); no interval cuts a round, so these are exact
    assert growth[("join_table", "Database_get_player")] == (0.5, 3.0)
    assert growth[("login", "Database_get_user")][0] <= 1.0
    text = out.getvalue()
    assert "== What grew when the table went from 2 to 7 players" in text
    assert "deal        Database_get_player      2.00 ->   7.00  x3.50" in text
    assert result.snapshots >= 4


def _truth(players: int) -> dict[str, dict[str, float]]:
    """Calls per request of each handler's watched calls, read off the game's code
    (callwatch/demo/game.py) for a table of ``players``; left out: the calls a cache
    entry's expiry decides (login's get_user and Cache_set, play's get_table and Cache_set)."""
    n = players
    return {"login": {"Cache_get": 1},
            "join_table": {"Database_get_table": 1, "Database_list_seats": 1, "Database_save_seat": 1,
                           "Database_get_player": sum(range(n)) / n},  # those seated before: 0..n-1
            "deal": {"Database_get_table": 1, "Database_list_seats": 1, "Database_get_player": n,
                     "Database_save_hand": n, "Cache_set": n},
            "play": {"Cache_get": 1 + n, "Database_save_action": 1, "Database_list_seats": 1},
            "leave": {"Database_delete_seat": 1, "Cache_delete": 1}}


def test_demo_intervals_each_hold_one_table_size() -> None:
    """Every flushed interval is of one table size: its calls per request are the game's
    exact numbers for that size, and its requests come in whole rounds (a round is n
    logins, n joins, 1 deal, 3n plays and n leaves)."""
    result = demo_run.run(duration=6, interval=1, threads=2, out=io.StringIO())
    sizes = [p for snap, p in result.intervals if any(hs.requests for hs in snap.handlers.values())]
    assert sizes[0] == 2 and sizes[-1] == 7 and sorted(sizes) == sizes and len(set(sizes)) == 2, sizes
    for snap, players in result.intervals:
        handlers = {h: hs for h, hs in snap.handlers.items() if isinstance(h, str) and hs.requests}
        if not handlers:
            continue
        rounds = handlers["deal"].requests
        assert {h: hs.requests for h, hs in handlers.items()} == {
            "login": players * rounds, "join_table": players * rounds, "deal": rounds,
            "play": 3 * players * rounds, "leave": players * rounds}, (players, snap.start)
        for handler, calls in _truth(players).items():
            hs = handlers[handler]
            seen = {snap.entries[k].name: fs.calls / hs.requests for k, fs in hs.funcs.items()
                    if not snap.entries[k].is_group}
            assert {f: seen.get(f, 0.0) for f in calls} == calls, (handler, players, snap.start)


def test_demo_command_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--graphite", "host:notaport"]) == 2
    assert "--graphite: 'host:notaport' is not HOST[:PORT]" in capsys.readouterr().err


def test_demo_profiles_the_two_tables_and_draws_the_growth(tmp_path: Path) -> None:
    out = io.StringIO()
    result = demo_run.run(duration=6, interval=1, threads=2, out=out, output=tmp_path)
    report = result.profiles
    assert report is not None, out.getvalue()
    assert any(name.endswith("(Database.get_player)") for name in report.top)
    assert report.callgraph is not None and "Database.get_player" in report.callgraph.read_text()
    assert report.html == tmp_path / "report.html" and 'class="node grew"' in report.html.read_text()
    assert f"   call graph, grown calls in red: {report.callgraph.resolve()}\n" in out.getvalue()
    assert f"in red): {report.html.resolve()}\n" in out.getvalue()
    assert "calls per request that grew" in out.getvalue()
    assert " 2.00 ->    7.00   x3.50   db.py" in out.getvalue()
    # the demo's leak: the 7-player deals keep their hands in game.HISTORY
    text = out.getvalue().split("== Memory: ", 1)[1]
    assert re.match(r"[\d,]+ callwatch\.demo\.game\.HandRecord objects kept by the 7-player deals; the leak "
                    r"hunt's report: ", text), text
    assert re.search(r"\n   callwatch\.demo\.game\.HandRecord: 0 -> [\d,]+ \(\+[\d,]+\)\n", text), text
    assert ("   what holds them:\n     module callwatch.demo.game\n       .__dict__ -> dict of " in text
            and "       ['HISTORY'] -> list of " in text), text
    assert result.leak_report is not None and (result.leak_report.parent / "chain-1.dot").is_file()
