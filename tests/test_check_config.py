"""``callwatch check-config``: the same prepare() as configure(), and its warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from callwatch.cli import main

TESTS = Path(__file__).resolve().parent


def test_a_call_budget_for_a_function_that_is_not_watched_is_a_warning(capsys: pytest.CaptureFixture[str],
                                                                       tmp_path: Path) -> None:
    p = tmp_path / "cw.yaml"
    p.write_text("watch:\n  - {target: 'cwsample.storage:get_user', group: db}\n  - preset: redis\n"
                 "profile:\n  call_budget:\n    get_user: 5\n    db: 9\n    redis_GET: 2\n    get_usr: 3\n")
    assert main(["check-config", str(p), "--path", str(TESTS)]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"warning: {p}:9: profile.call_budget.get_usr: 'get_usr' is not the metric name of a watched function or "
        "group, so this budget never applies. Fix: did you mean 'get_user'?"]
    assert captured.out.rstrip().endswith(f"{p}: valid, 1 function(s) and 1 preset(s) watched, 1 warning(s)")


def test_schema_and_target_problems_are_reported_together(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    p = tmp_path / "cw.yaml"
    p.write_text("graphite:\n  intervall: 5\nwatch:\n  - cwsample.storage:get_usr\n")
    assert main(["check-config", str(p), "--path", str(TESTS)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{p}:2: graphite.intervall: unknown key 'intervall'. Fix: remove it, or did you mean 'interval'?",
        f"{p}:4: target: 'cwsample.storage' has no attribute 'get_usr' (from 'cwsample.storage:get_usr'). "
        "Fix: did you mean 'get_user' or 'get_users'?",
        f"{p}: 2 problem(s); not valid",
    ]


def test_an_unwritable_dump_dir_fails_the_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    p = tmp_path / "cw.yaml"
    p.write_text(f"profile:\n  dump_dir: {tmp_path}/f\n")
    assert main(["check-config", str(p)]) == 2
    assert capsys.readouterr().err.splitlines()[0] == (
        f"{p}:2: profile.dump_dir: '{tmp_path}/f' is not a directory this process can write ({tmp_path}/f is not "
        "a directory). Fix: create it and let the application's user write to it, or choose another directory, "
        "e.g. dump_dir: /var/tmp/callwatch-profiles")
