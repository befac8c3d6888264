"""Nothing is lost when multiprocessing ends a worker with os._exit() (issue 12, section 2).

Each start path runs a known number of ``job`` requests (3 watched ``fetch_row`` calls each)
in worker processes that end and are replaced; the totals read back from a real
graphite-web, summed over workers and intervals, count every request exactly once.
"""

from __future__ import annotations

import os
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
    ("executor-spawn", 10, 1),  # each spawned worker configured by the initializer
    ("pool", 30, 15),       # maxtasksperchild=2: 15 or more workers, recycled mid-run
    ("billiard", 10, 5),    # celery's prefork pool, recycled the same way (each exit sleeps 1 s)
]


@pytest.mark.graphite
@pytest.mark.parametrize(("mode", "requests", "min_workers"), PATHS, ids=[p[0] for p in PATHS])
def test_every_request_reaches_graphite_when_workers_end(graphite: Graphite, tmp_path: Path, mode: str,
                                                         requests: int, min_workers: int) -> None:
    if mode == "billiard":
        pytest.importorskip("billiard")
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


def run_code(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(TESTS))
    r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


LATE_IMPORT = """
import sys
import callwatch
callwatch.configure(sys.argv[1], strict=True)
assert "multiprocessing" not in sys.modules  # so the fork below finds callwatch unhooked
import multiprocessing
from apps import procend_work as work
p = multiprocessing.get_context("fork").Process(target=work.serve, args=(7,))
p.start()
p.join(60)
work.serve(2)  # the parent serves too, and leaves through atexit
print(p.exitcode)
"""


@pytest.mark.graphite
def test_multiprocessing_imported_after_configure_still_sends_the_childs_last_interval(
        graphite: Graphite, tmp_path: Path) -> None:
    prefix = "pe" + uuid.uuid4().hex[:8]
    config = write_config(tmp_path / "callwatch.yaml", port=graphite.line_port, prefix=prefix,
                          slot_dir=tmp_path / "slots")
    start = int(time.time()) - 2
    assert run_code(LATE_IMPORT, str(config)).stdout.strip() == "0"
    got = graphite.wait_for(f"sumSeries({prefix}.*.handler.job.requests)", start, int(time.time()) + 2,
                            lambda p: sum(p.values()) >= 9)
    assert sum(got.values()) == 9, got
    child = graphite.wait_for(f"{prefix}.h_w1.handler.job.watch.fetch_row.calls", start, int(time.time()) + 2,
                              lambda p: sum(p.values()) >= 21)
    assert sum(child.values()) == 21, child  # 7 requests x 3 calls, under the child's own slot


KILLED = """
import sys
import multiprocessing
import callwatch
from apps import procend_work as work
callwatch.configure(sys.argv[1], strict=True)
p = multiprocessing.get_context("fork").Process(target=work.serve_then_die, args=(5, 3))
p.start()
p.join(60)
print(p.exitcode)
"""


@pytest.mark.graphite
def test_a_worker_killed_with_sigkill_loses_only_what_it_had_not_sent(graphite: Graphite, tmp_path: Path) -> None:
    prefix = "pe" + uuid.uuid4().hex[:8]
    config = write_config(tmp_path / "callwatch.yaml", port=graphite.line_port, prefix=prefix,
                          slot_dir=tmp_path / "slots")
    start = int(time.time()) - 2
    assert run_code(KILLED, str(config)).stdout.strip() == "-9"
    time.sleep(1.5)  # had the 3 unsent requests been sent after all, they would be there by now
    got = graphite.wait_for(f"sumSeries({prefix}.*.handler.job.requests)", start, int(time.time()) + 2,
                            lambda p: sum(p.values()) >= 5)
    assert sum(got.values()) == 5, got


STUCK = """
import socket
import sys
import time
import multiprocessing
import callwatch
from apps import procend_work as work
stuck = socket.socket()
stuck.bind(("127.0.0.1", 0))
stuck.listen(64)  # the kernel completes connections and takes the bytes; nobody reads or closes
callwatch.configure({"graphite": {"host": "127.0.0.1", "port": stuck.getsockname()[1], "interval": 1,
                                  "timeout": 0.5, "prefix": "stuck"},
                     "naming": {"host": "h", "slot_dir": sys.argv[1]}}, strict=True)
p = multiprocessing.get_context("fork").Process(target=work.serve, args=(5,))
t0 = time.monotonic()
p.start()
p.join(30)
took = time.monotonic() - t0
callwatch.shutdown()
stuck.settimeout(0.5)
data = b""
try:
    while True:  # what every connection left in the kernel's queue had sent
        conn, _ = stuck.accept()
        conn.settimeout(0.5)
        while chunk := conn.recv(65536):
            data += chunk
except OSError:
    pass
print(p.exitcode, took, b"stuck.h_w1.handler.job.requests 5 " in data)
"""


def test_the_final_flush_of_a_multiprocessing_child_cannot_hang_its_exit(tmp_path: Path) -> None:
    r = run_code(STUCK, str(tmp_path / "slots"))
    code, took, sent = r.stdout.split()
    assert code == "0", r.stdout + r.stderr  # None: still running after 30 s
    assert sent == "True", r.stdout + r.stderr  # the final flush did write its lines
    # bound: shutdown()'s thread join (5 s) plus one send (graphite.timeout), with room for a
    # loaded machine
    assert float(took) < 10, took


NO_MULTIPROCESSING = """
import sys
import callwatch
callwatch.configure({"graphite": {"interval": 60}}, strict=True)
callwatch.shutdown()
print(sorted(m for m in sys.modules if m.split(".")[0] == "multiprocessing"))
"""


def test_callwatch_does_not_import_multiprocessing() -> None:
    assert run_code(NO_MULTIPROCESSING).stdout.strip() == "[]"


def test_one_finalizer_and_one_after_fork_hook_however_often_configure_runs() -> None:
    import multiprocessing.util as util

    from callwatch import _mpexit, _runtime

    for _ in range(3):
        callwatch.configure({"graphite": {"interval": 60}}, strict=True)
    callwatch.shutdown()
    callwatch.configure({"graphite": {"interval": 60}}, strict=True)
    finalizers = [f for f in list(util._finalizer_registry.values())
                  if getattr(f, "_callback", None) is _runtime._at_exit]
    assert [f._key[0] for f in finalizers] == [-100]
    hooks = [k for k in list(util._afterfork_registry) if k[2] is _mpexit.ExitHook._after_multiprocessing_fork]
    assert len(hooks) == 1
