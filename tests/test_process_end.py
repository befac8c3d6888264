"""Nothing is lost when multiprocessing ends a worker with os._exit() (issue 12, section 2).

Each start path runs a known number of ``job`` requests (3 watched ``fetch_row`` calls each)
in worker processes that end and are replaced; the totals read back from a real
graphite-web, summed over workers and intervals, count every request exactly once.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import callwatch

from conftest import ROOT, Graphite

TESTS = ROOT / "tests"
DRIVER = TESTS / "apps" / "procend_run.py"
WATCH = "apps.procend_work:fetch_row"


def write_config(path: Path, *, port: int, prefix: str, slot_dir: Path) -> Path:
    path.write_text(f"graphite:\n  host: 127.0.0.1\n  port: {port}\n  prefix: {prefix}\n  interval: 1\n"
                    f"naming:\n  host: h\n  slot_dir: {slot_dir}\n"
                    f"watch:\n  - {{target: '{WATCH}', group: db}}\n")
    return path


def run_driver(mode: str, requests: int, config: Path) -> int:
    """Runs tests/apps/procend_run.py; returns how many worker processes served requests."""
    env = dict(os.environ, PROCEND_MODE=mode, CALLWATCH_CONFIG=str(config), PYTHONPATH=str(TESTS))
    r = subprocess.run([sys.executable, str(DRIVER), str(requests)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    return int(r.stdout.strip())


# (start path, requests, workers that served them: at least)
PATHS = [
    ("fork", 10, 4),        # two rounds of two processes: 40 requests
    ("spawn", 10, 4),
    ("forkserver", 10, 4),
    ("executor", 30, 1),    # 2 workers, stopped by the executor's shutdown
    ("pool", 30, 15),       # maxtasksperchild=2: 15 or more workers, recycled mid-run
]


@pytest.mark.graphite
@pytest.mark.parametrize(("mode", "requests", "min_workers"), PATHS, ids=[p[0] for p in PATHS])
def test_every_request_reaches_graphite_when_workers_end(graphite: Graphite, tmp_path: Path, mode: str,
                                                         requests: int, min_workers: int) -> None:
    prefix = "pe" + uuid.uuid4().hex[:8]
    config = write_config(tmp_path / "callwatch.yaml", port=graphite.line_port, prefix=prefix,
                          slot_dir=tmp_path / "slots")
    start = int(time.time()) - 2
    workers = run_driver(mode, requests, config)
    end = int(time.time()) + 2
    assert workers >= min_workers
    total = 4 * requests if mode in ("fork", "spawn", "forkserver") else requests
    got = graphite.wait_for(f"sumSeries({prefix}.*.handler.job.requests)", start, end,
                            lambda p: sum(p.values()) >= total)
    assert sum(got.values()) == total, got
    calls = graphite.wait_for(f"sumSeries({prefix}.*.handler.job.watch.fetch_row.calls)", start, end,
                              lambda p: sum(p.values()) >= 3 * total)
    assert sum(calls.values()) == 3 * total, calls
