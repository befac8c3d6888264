"""After fork the child starts its own flush thread and its own, empty, counts."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest

import callwatch
from callwatch import _core

from conftest import TcpReceiver

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Forking a process that has threads (the flush thread) is exactly what gunicorn
    # --preload does; Python 3.12+ warns about it, and this is the case under test.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


def wait_child(pid: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError("the child hung (a lock held at fork time?)")


def test_child_counts_only_its_own_requests_and_flushes_them(tcp_receiver: TcpReceiver) -> None:
    port = tcp_receiver.port
    callwatch.configure({"graphite": {"host": "127.0.0.1", "port": port, "interval": 60, "prefix": "fork"},
                         "naming": {"host": "h"}}, strict=True)
    for _ in range(5):
        with callwatch.request("parent_only"):
            pass
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            alive = any(t.name == "callwatch-flush" and t.is_alive() for t in threading.enumerate())
            for _ in range(3):
                with callwatch.request("child_only"):
                    pass
            callwatch.shutdown()
            code = 0 if alive else 3
        finally:
            os._exit(code)
    assert wait_child(pid) == 0, "the child had no running flush thread"
    child = tcp_receiver.data
    assert b"fork.h_w1.handler.child_only.requests 3 " in child
    assert b"parent_only" not in child  # the parent's counts are not sent twice
    tcp_receiver.received.clear()
    callwatch.shutdown()
    parent = tcp_receiver.data
    assert b"fork.h_w0.handler.parent_only.requests 5 " in parent and b"child_only" not in parent


def test_a_lock_held_at_fork_time_does_not_hang_the_child() -> None:
    callwatch.configure({"graphite": {"interval": 60}}, strict=True)
    with _core.collector._lock:  # as if another thread was inside record() when fork() ran
        pid = os.fork()
        if pid == 0:
            try:
                with callwatch.request("after_fork"):
                    pass
                snap = _core.collector.swap(0)
                os._exit(0 if snap.handlers["after_fork"].requests == 1 else 2)
            finally:
                os._exit(1)
    assert wait_child(pid) == 0



def test_a_forked_child_without_a_usable_slot_directory_gets_its_own_fallback_name(
        tcp_receiver: TcpReceiver, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # refused as a slot directory
    rt = callwatch.configure({"graphite": {"host": "127.0.0.1", "port": tcp_receiver.port, "interval": 60,
                                           "prefix": "fb"},
                              "naming": {"host": "h", "slot_dir": str(shared)}}, strict=True)
    assert rt is not None and rt.worker == f"p{os.getpid() % 64}"
    pid = os.fork()
    if pid == 0:  # child
        try:
            with callwatch.request("child_only"):
                pass
            callwatch.shutdown()
        finally:
            os._exit(0)
    with callwatch.request("parent_only"):
        pass
    assert wait_child(pid) == 0
    child = re.findall(rb"^fb\.h_(p\d+)\.handler\.child_only\.requests 1 ", tcp_receiver.data, re.M)
    # the child's own name: from its pid, or the next one when that is the parent's
    assert child in ([f"p{pid % 64}".encode()], [f"p{(pid + 1) % 64}".encode()]), tcp_receiver.data
    assert child[0] != rt.worker.encode()
    callwatch.shutdown()
    assert f"fb.h_{rt.worker}.handler.parent_only.requests 1 ".encode() in tcp_receiver.data
