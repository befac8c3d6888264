"""Carbon stopped for 60 s under steady load, then running again: nothing is lost, every
second keeps its own point (its original timestamp), and the app never noticed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

import callwatch

from conftest import ROOT, Graphite, free_ports

pytestmark = pytest.mark.graphite

OUTAGE = 60.0


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Graphite, int]]:
    """A stack of this module's own: its carbon-cache is frozen for a minute."""
    base = tmp_path_factory.mktemp("outage")
    line, pickle, query, web = free_ports(4)
    env = dict(os.environ, CARBON_LINE_PORT=str(line), CARBON_PICKLE_PORT=str(pickle),
               CARBON_QUERY_PORT=str(query), GRAPHITE_WEB_PORT=str(web))
    up = subprocess.run([str(ROOT / "scripts" / "graphite-up"), str(base)], env=env, capture_output=True,
                        text=True, timeout=600)
    if up.returncode != 0:
        pytest.fail(f"graphite-up failed:\n{up.stdout}\n{up.stderr}")
    pid = int(dict(line.split("=", 1) for line in up.stdout.split())["CARBON_PID"])
    try:
        yield Graphite(base, line, f"http://127.0.0.1:{web}"), pid
    finally:
        os.kill(pid, signal.SIGCONT)
        subprocess.run([str(ROOT / "scripts" / "graphite-down"), str(base)], timeout=60)


def test_carbon_stopped_for_a_minute(own_stack: tuple[Graphite, int]) -> None:
    graphite, carbon_pid = own_stack
    prefix = "out" + uuid.uuid4().hex[:8]
    rt = callwatch.configure({"graphite": {"host": "127.0.0.1", "port": graphite.line_port, "prefix": prefix,
                                           "interval": 2, "timeout": 0.5},
                              "naming": {"host": "h"}, "spikes": {"enabled": False}}, strict=True)
    assert rt is not None
    done = threading.Event()
    sent_at: list[float] = []
    slowest = [0.0]

    def load() -> None:
        while not done.is_set():
            t = time.perf_counter()
            with callwatch.request("steady"):
                pass
            slowest[0] = max(slowest[0], time.perf_counter() - t)
            sent_at.append(time.time())
            time.sleep(0.01)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(5)
        os.kill(carbon_pid, signal.SIGSTOP)  # carbon stops reading: connections hang, sends time out
        stopped = time.time()
        time.sleep(OUTAGE)
        os.kill(carbon_pid, signal.SIGCONT)
        resumed = time.time()
        deadline = time.monotonic() + 30
        while rt.exporter.buffered and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)
    finally:
        done.set()
        worker.join()
        callwatch.shutdown()
    assert rt.exporter.stats.send_errors >= OUTAGE / 2 - 2  # it really was down, every flush failed
    assert rt.exporter.stats.points_dropped == 0
    assert slowest[0] < 0.05  # the app never waited on Graphite

    start, end = int(sent_at[0]) - 4, int(time.time()) + 4
    target = f"{prefix}.h_w0.handler.steady.requests"
    got = graphite.wait_for(target, start, end, lambda p: sum(p.values()) == len(sent_at), timeout=30)
    assert sum(got.values()) == len(sent_at)
    # every 2-s interval of the outage has its own point, at its own timestamp
    outage_intervals = range(int(stopped) // 2 * 2 + 2, int(resumed) // 2 * 2, 2)
    missing = [t for t in outage_intervals if not got.get(t)]
    assert missing == []
