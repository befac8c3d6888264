"""maple and haven (callwatch.integrations.maple) against the real frameworks.

- A real maple ``Workshop`` with 3 worker processes, fed by ``Gateway``: the gateway side of
  maple's worker protocol, written with maple's own ``Task`` and netkit's ``Box``.  A
  worker connects, asks for a task (``CMD_WORKER_ASK_FOR_TASK``), gets one client request
  (``CMD_CLIENT_REQ``, the body a ``Box`` whose ``cmd`` is the route) and answers it
  (``CMD_WRITE_TO_CLIENT``).  One worker is stopped mid-interval (maple's master starts a
  replacement), then the whole Workshop (SIGTERM to the master): the totals read back
  from graphite-web are exact, in both set-ups (configured in the master, per worker).
- A real haven ``GHaven`` with 20 gevent clients.
- In-process: names by endpoint or command, routes added later, a second instrument().
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
from maple import Blueprint, Task, Workshop, constants
from netkit.box import Box

import callwatch
from apps import config as app_config
from apps import maple_game as game
from callwatch.integrations.maple import instrument
from callwatch.testing import FakeClock, RecordingSender
from conftest import Graphite, free_ports
from test_servers import totals

TESTS = Path(__file__).resolve().parent
# Long enough that a worker stopped mid-interval is replaced within the same interval.
INTERVAL = 5


class Gateway:
    """maple's gateway, as far as workers see it: hands out queued client requests one at
    a time to whichever worker asks, and collects the answers.  A request whose worker
    closed the connection before answering is queued again (it was not served)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = int(self.server.getsockname()[1])
        self.jobs: queue.Queue[tuple[int, int]] = queue.Queue()
        self.answers: queue.Queue[tuple[int, int, int, int]] = queue.Queue()  # sn, cmd, ret, pid
        self.connected = 0
        self._sn = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def send(self, cmds: list[int]) -> list[tuple[int, int, int, int]]:
        """Queue client requests and wait for all their answers."""
        for cmd in cmds:
            self._sn += 1
            self.jobs.put((self._sn, cmd))
        return [self.answers.get(timeout=30) for _ in cmds]

    def wait(self, connected: int) -> None:
        """Until ``connected`` workers have connected in all."""
        deadline = time.monotonic() + 30
        while self.connected < connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.connected >= connected, self.connected

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        self.server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except socket.timeout:
                continue
            self.connected += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        read = _Reader(conn, self._stop)
        with conn:
            while (ask := read()) is not None:
                assert ask.cmd == constants.CMD_WORKER_ASK_FOR_TASK, ask
                job = self._next_job()
                if job is None:
                    break
                sn, cmd = job
                request = Task(dict(cmd=constants.CMD_CLIENT_REQ, conn_id=sn, body=Box(dict(cmd=cmd, sn=sn)).pack()))
                try:
                    conn.sendall(request.pack())
                    rsp = read()
                except OSError:  # the worker is gone (a stopped worker waiting for a task)
                    rsp = None
                if rsp is None:
                    self.jobs.put(job)
                    break
                assert rsp.cmd == constants.CMD_WRITE_TO_CLIENT and rsp.conn_id == sn, rsp
                box = Box()
                assert box.unpack(rsp.body) > 0
                self.answers.put((sn, box.cmd, box.ret, int(box.body or 0)))

    def _next_job(self) -> tuple[int, int] | None:
        while not self._stop.is_set():
            try:
                return self.jobs.get(timeout=0.2)
            except queue.Empty:
                continue
        return None



class _Reader:
    """The tasks a worker sends on one connection, one at a time."""

    def __init__(self, conn: socket.socket, stop: threading.Event) -> None:
        self.conn = conn
        self.stop = stop
        self.buf = b""

    def __call__(self) -> Task | None:
        """The next task; None when the worker closed the connection (or the test ends)."""
        while True:
            task = Task()
            used = task.unpack(self.buf)
            if used > 0:
                self.buf = self.buf[used:]
                return task
            assert used == 0, self.buf
            try:
                chunk = self.conn.recv(65536)
            except socket.timeout:
                if self.stop.is_set():
                    return None
                continue
            if not chunk:
                return None
            self.buf += chunk


@contextmanager
def process(args: list[str], cfg: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, CALLWATCH_CONFIG=str(cfg),
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    with open(log, "wb") as out:
        p = subprocess.Popen([sys.executable, *args], cwd=TESTS, env=env, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        try:
            yield p
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def stop(p: subprocess.Popen[bytes], log: Path) -> None:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)
        raise AssertionError(f"did not stop on SIGTERM:\n{log.read_text()}")
    assert p.returncode == 0, log.read_text()


def config(graphite: Graphite, tmp_path: Path) -> tuple[str, Path]:
    prefix = "mpl" + uuid.uuid4().hex[:8]
    return prefix, app_config.write(tmp_path / "cw.yaml", port=graphite.line_port, prefix=prefix,
                                    slot_dir=tmp_path / "slots", interval=INTERVAL)


MIX = [game.LOGIN] * 30 + [game.LOBBY_JOIN] * 20 + [game.TABLE_JOIN] * 20 + [game.LEAVE] * 10 + [game.BOOM] * 5
# Two rounds of MIX, written out per handler: requests and the watched calls each makes.
MAPLE_EXPECTED = {
    "login.requests": 60,
    "login.watch.get_item.calls": 120,
    "login.watch.cache_get.calls": 60,
    "lobby_join.requests": 40,
    "lobby_join.watch.get_price.calls": 40,
    "table_join.requests": 40,
    "table_join.watch.get_item.calls": 120,
    "table_leave.requests": 20,
    "boom.requests": 10,
    "boom.errors": 10,
    "boom.watch.get_item.calls": 10,
    "login.errors": 0,
}


@pytest.mark.graphite
@pytest.mark.parametrize("mode", ["master", "worker"])
def test_workshop_3_workers_restart_and_clean_stop_exact(graphite: Graphite, tmp_path: Path, mode: str) -> None:
    prefix, cfg = config(graphite, tmp_path)
    gateway = Gateway()
    log = tmp_path / "maple.log"
    start = int(time.time())
    try:
        with process(["-m", "apps.maple_game", str(gateway.port), "3", mode], cfg, log) as master:
            gateway.wait(connected=3)
            first = gateway.send(MIX)
            pids = {pid for _, _, _, pid in first if pid}
            assert len(pids) == 3, pids  # every worker served
            victim = min(pids)
            os.kill(victim, signal.SIGTERM)  # maple's master starts a replacement
            gateway.wait(connected=4)
            second = gateway.send(MIX)
            assert victim not in {pid for _, _, _, pid in second}
            stop(master, log)
    finally:
        gateway.close()
    answered = sorted(cmd for _, cmd, _, _ in first + second)
    assert answered == sorted(MIX * 2)
    assert sum(1 for _, _, ret, _ in first + second if ret == constants.RET_INTERNAL) == 10
    assert totals(graphite, prefix, start, MAPLE_EXPECTED) == MAPLE_EXPECTED
    origins = {s["target"].split(".")[1] for s in graphite.render(f"{prefix}.*.handler.*.requests", start - 5,
                                                                   int(time.time()) + 5)}
    # The replacement took its predecessor's slot: three workers, three names.
    assert origins == {"h_w0", "h_w1", "h_w2"} if mode == "worker" else {"h_w1", "h_w2", "h_w3"}, origins
