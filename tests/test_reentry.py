"""The hot path re-entered from finalizers and signal handlers (issue 11 #1).

A finalizer (``__del__`` run by the GC during the collector's own allocations) or a signal
handler that calls a watched function outside any request records a background request on
the very thread that may be adding a batch to the table.  Each scenario runs in a
subprocess under a timeout, so a deadlock fails the test instead of hanging the run, and
the counts are checked exactly (nothing lost, nothing twice).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

HEADER = """
import sys, threading, time
import callwatch
from callwatch import _core
from callwatch.aggregate import BACKGROUND

@callwatch.watch(name="fin")
def fin():
    return None

def background_calls():
    snap = _core.collector.swap(0.0)
    hs = snap.handlers.get(BACKGROUND)
    if hs is None:
        return 0
    return sum(fs.calls for k, fs in hs.funcs.items() if snap.entries[k].name == "fin")
"""

FINALIZERS = HEADER + """
import gc
gc.set_threshold(50, 5, 5)  # collect often: finalizers run inside the fold's allocations
sys.setswitchinterval(1e-5)  # and threads interleave inside it

class Cyclic:
    def __init__(self):
        self.me = self  # only the cyclic GC frees it, at an arbitrary allocation
    def __del__(self):
        for _ in range(300):  # more than a batch: the finalizer itself folds
            fin()

N = 1_000
def worker():
    for _ in range(N):
        Cyclic()
        fin()

threads = [threading.Thread(target=worker) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
gc.collect()
got = background_calls()
print(got)
sys.exit(0 if got == 301 * 4 * N else 1)
"""

SIGNALS = HEADER + """
import signal
handled = 0

def on_alarm(signum, frame):
    global handled
    handled += 1
    for _ in range(300):  # more than a batch: the handler itself folds
        fin()

signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.005, 0.005)
direct = 0
deadline = time.monotonic() + 3.0
while time.monotonic() < deadline and direct < 2_000_000:
    for _ in range(1000):
        fin()
    direct += 1000
signal.setitimer(signal.ITIMER_REAL, 0, 0)
got = background_calls()
print(got, direct, handled)
sys.exit(0 if handled > 10 and got == direct + 300 * handled else 1)
"""


@pytest.fixture(params=["C", "Python"])
def env(request: pytest.FixtureRequest) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CALLWATCH_")}
    if request.param == "Python":
        e["CALLWATCH_PURE_PYTHON"] = "1"
    return e


def run(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env,
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the process hung (a lock taken twice by one thread?)")


def test_finalizers_calling_a_watched_function_from_four_threads_neither_hang_nor_lose_calls(
        env: dict[str, str]) -> None:
    r = run(FINALIZERS, env)
    assert r.returncode == 0, (r.stdout, r.stderr)


def test_a_signal_handler_calling_a_watched_function_neither_hangs_nor_loses_calls(env: dict[str, str]) -> None:
    r = run(SIGNALS, env)
    assert r.returncode == 0, (r.stdout, r.stderr)
