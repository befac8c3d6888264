"""callwatch stats / diff / callgraph on dumps from plain cProfile and from callwatch."""

from __future__ import annotations

import cProfile
import json
import pstats
import re
import subprocess
import sys
from pathlib import Path

import pytest

from callwatch.cli import main


def get_db_user(i: int) -> int:
    return sum(range(2000 + i))  # enough work to stand out in the call graph


def table(players: int) -> None:
    for i in range(players):
        get_db_user(i)


@pytest.fixture
def dumps(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for players, name in ((2, "two"), (7, "seven")):
        d = tmp_path / name
        d.mkdir()
        for r in range(3):
            prof = cProfile.Profile()
            prof.runcall(table, players)
            prof.dump_stats(str(d / f"req{r}.prof"))
        out[name] = d
    return out


def test_stats_json_rows_equal_pstats(dumps: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(dumps["seven"].glob("*.prof"))
    assert main(["stats", *map(str, files), "-s", "cumulative", "-s", "time", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    ref = pstats.Stats(*map(str, files))
    ref.strip_dirs().sort_stats("cumulative", "time")
    assert [r["function"] for r in rows] == [pstats.func_std_string(k) for k in ref.fcn_list]  # type: ignore[attr-defined]
    for r, k in zip(rows, ref.fcn_list):  # type: ignore[attr-defined]
        cc, nc, tt, ct, _ = ref.stats[k]  # type: ignore[attr-defined]
        assert (r["pcalls"], r["ncalls"], r["tottime"], r["cumtime"]) == (cc, nc, tt, ct)
    line = get_db_user.__code__.co_firstlineno
    assert {r["function"]: r["ncalls"] for r in rows}[f"test_analysis.py:{line}(get_db_user)"] == 21


def test_stats_text_restrictions_and_callers(dumps: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", str(dumps["seven"]), "-s", "calls", "-p", "2"]) == 0
    text = capsys.readouterr().out
    assert "List reduced from" in text and "due to restriction <2>" in text
    assert main(["stats", str(dumps["seven"]), "--callers", "get_db_user", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    caller = f"test_analysis.py:{table.__code__.co_firstlineno}(table)"
    assert list(row["callers"]) == [caller]
    assert (row["callers"][caller]["ncalls"], row["callers"][caller]["pcalls"]) == (21, 21)
    assert main(["stats", str(dumps["seven"]), "-d", "-p", "0.5"]) == 0
    assert str(Path(__file__).resolve()) in capsys.readouterr().out  # -d keeps directories


def test_diff_finds_what_grew(dumps: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diff", str(dumps["two"]), str(dumps["seven"]), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    # get_db_user and the builtin sum it calls both grow 2 -> 7 calls per request; they lead
    # the list (in either order: the tie is broken by measured time growth)
    leaders = sorted(r["function"] for r in rows[:2])
    assert leaders[0].endswith("(get_db_user)") and leaders[1] == "{built-in method builtins.sum}", leaders
    top = next(r for r in rows if r["function"].endswith("(get_db_user)"))
    assert top["calls_per_request"] == [2.0, 7.0] and top["calls_ratio"] == 3.5
    assert main(["diff", str(dumps["two"]), str(dumps["seven"])]) == 0
    assert "     2.00      7.00   x3.50" in capsys.readouterr().out


def test_callgraph_highlights_and_colors_growth(dumps: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "g.dot"
    assert main(["callgraph", str(dumps["seven"]), "--diff", str(dumps["two"]), "--highlight", "*get_db_user*",
                 "-o", str(out)]) == 0
    node = next(line for line in out.read_text().splitlines()
                if re.match(r"^\t\d+ \[", line) and "get_db_user" in line)
    assert 'color="#d62728"' in node and "x3.50 calls/req (2.00 -> 7.00)" in node and 'penwidth="4"' in node
    svg = tmp_path / "g.svg"
    assert main(["callgraph", str(dumps["seven"]), "-o", str(svg)]) == 0
    assert svg.read_text().lstrip().startswith("<?xml") and "get_db_user" in svg.read_text()


@pytest.mark.parametrize("content, message", [
    (b"", "empty file, not a profile"),
    (b"\x00garbage", "not a pstats profile (not marshal data; corrupt, truncated, or another format)"),
    (None, "no such file or directory"),
])
def test_bad_files_get_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       content: bytes | None, message: str) -> None:
    p = tmp_path / "x.prof"
    if content is not None:
        p.write_bytes(content)
    assert main(["stats", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"callwatch stats: {p}: {message}") and "Traceback" not in err


def test_non_pstats_marshal_and_empty_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import marshal

    p = tmp_path / "list.prof"
    p.write_bytes(marshal.dumps([1, 2, 3]))
    assert main(["diff", str(p), str(p)]) == 2
    assert "not a pstats profile (marshal data of another shape)" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["callgraph", str(empty), "-o", str(tmp_path / "x.svg")]) == 2
    assert "no profile files" in capsys.readouterr().err


def test_stats_through_a_real_subprocess(dumps: dict[str, Path]) -> None:
    r = subprocess.run([sys.executable, "-m", "callwatch", "stats", str(dumps["two"]), "-p", "3"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "function calls in" in r.stdout


@pytest.mark.parametrize("command", ["callgraph", "stats", "diff"])
def test_a_dump_with_nan_times_gets_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     command: str) -> None:
    import marshal

    bad = tmp_path / "nan.prof"
    bad.write_bytes(marshal.dumps({
        ("app.py", 5, "g"): (2, 2, 0.1, 0.2, {}),
        ("app.py", 1, "f"): (1, 1, float("nan"), float("nan"), {("app.py", 5, "g"): (1, 1, 0.1, 0.1)}),
    }))
    argv = {"callgraph": ["callgraph", str(bad), "-o", str(tmp_path / "g.svg")], "stats": ["stats", str(bad)],
            "diff": ["diff", str(bad), str(bad)]}[command]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"callwatch {command}: {bad}: not a usable pstats profile (('app.py', 1, 'f') has the counts and times "
        "(1, 1, nan, nan), not finite numbers >= 0). Fix: dump profiles with cProfile's dump_stats() or "
        "callwatch's profile.dump_dir\n")
    assert not (tmp_path / "g.svg").exists()


def test_stats_into_a_pipe_closed_early_ends_quietly(tmp_path: Path) -> None:
    """`callwatch stats --json | head -1`: the reader leaves; no BrokenPipeError traceback."""
    import marshal

    dump = tmp_path / "big.prof"  # 5000 functions: rows far beyond what a pipe buffers
    dump.write_bytes(marshal.dumps({("app.py", i, f"f{i}"): (1, 1, 0.001, 0.001, {}) for i in range(5000)}))
    cw = subprocess.Popen([sys.executable, "-m", "callwatch", "stats", "--json", str(dump)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert cw.stdout is not None and cw.stderr is not None
    head = subprocess.run(["head", "-1"], stdin=cw.stdout, capture_output=True, timeout=60)
    cw.stdout.close()  # only head holds the pipe's read end now
    err = cw.stderr.read()
    assert cw.wait(timeout=60) == 141  # as a command killed by SIGPIPE
    assert head.stdout == b"[\n"
    assert err == b""
