"""The docs stay true where that is cheap to check.

- Every fenced ```yaml block in README.md and docs/ whose top-level keys are callwatch
  config sections loads with callwatch's own loader (callwatch.config.load): a key that
  was renamed or a value out of range in an example fails here, naming the file and line.
- The README's quick start runs as written, in a temp dir, and leaves the pstats dumps it
  says it leaves (a snippet whose dump criteria never match a fast app fails here).
- README.md stays short (the reference lives in docs/).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from callwatch import config

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
SECTIONS = {"enabled", "graphite", "naming", "handlers", "watch", "spikes", "alerts", "profile", "memory"}


def fenced(path: Path, lang: str) -> list[tuple[int, str]]:
    """(line of the fence, body) of every ```lang block of the file."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(2))
            for m in FENCE.finditer(text) if m.group(1) == lang]


def config_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in DOC_FILES:
        for line, body in fenced(path, "yaml"):
            keys = set(re.findall(r"^([A-Za-z_]+):", body, re.M))
            if keys and keys <= SECTIONS:
                blocks.append((f"{path.relative_to(ROOT)}:{line}", body))
    return blocks


def test_the_docs_have_config_examples() -> None:
    # The check below must have something to check: the README's quick start and the
    # watching, profiling and memory pages all show config.
    names = {where.split(":")[0] for where, _ in config_blocks()}
    assert {"README.md", "docs/watching.md", "docs/profiling.md", "docs/memory.md"} <= names


@pytest.mark.parametrize(("where", "body"), config_blocks(), ids=[w for w, _ in config_blocks()])
def test_config_example_loads(where: str, body: str, tmp_path: Path) -> None:
    path = tmp_path / "example.yaml"
    path.write_text(body, encoding="utf-8")
    try:
        config.load(path, env={})
    except config.ConfigError as e:
        pytest.fail(f"{where}: the example does not load:\n{e}")


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 160, f"README.md has {lines} lines; move reference text into docs/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_readme_quick_start_runs_and_dumps(tmp_path: Path) -> None:
    readme = ROOT / "README.md"
    (_, app), = [b for b in fenced(readme, "python") if "callwatch.configure(\"callwatch.yaml\")" in b[1]]
    (_, yml), = [b for b in fenced(readme, "yaml") if "dump_dir: profiles" in b[1]]
    (tmp_path / "app.py").write_text(app, encoding="utf-8")
    (tmp_path / "callwatch.yaml").write_text(yml, encoding="utf-8")
    # Nothing listens on the port: the README says the app warns once and carries on.
    env = {"PATH": "/usr/bin:/bin", "CALLWATCH_GRAPHITE": f"127.0.0.1:{free_port()}"}
    run = subprocess.run([sys.executable, "app.py"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("cannot send to Graphite") == 1, run.stderr
    dumps = sorted((tmp_path / "profiles" / "login").glob("*.prof"))
    assert dumps, f"the quick start left no dump in profiles/login/; stderr:\n{run.stderr}"
    stats = subprocess.run([sys.executable, "-m", "callwatch", "stats", str(dumps[0]), "--json"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert stats.returncode == 0, stats.stderr
    assert "get_user" in stats.stdout
