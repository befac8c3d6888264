"""The gateway side of maple's worker protocol, for tests/test_maple.py and for trying a
maple server without maple's C++ gateway (which is not on PyPI).

A worker connects, asks for a task (``CMD_WORKER_ASK_FOR_TASK``), gets one client request
(``CMD_CLIENT_REQ``, its body a ``Box`` whose ``cmd`` is the route) and answers it
(``CMD_WRITE_TO_CLIENT``), then asks again.  Written with maple's own ``Task`` and
netkit's ``Box``.

    python -m apps.maple_gateway <port> <workers> <cmd>x<count> ...

waits (at most 30 s) for ``workers`` workers to connect, sends the requests, and prints
how many answers each command got, as JSON.
"""

from __future__ import annotations

import json
import queue
import socket
import sys
import threading
import time
from collections import Counter

from maple import Task, constants
from netkit.box import Box


class Gateway:
    """maple's gateway, as far as workers see it: hands out queued client requests one at
    a time to whichever worker asks, and collects the answers.  A request whose worker
    closed the connection before answering is queued again (it was not served)."""

    def __init__(self, port: int = 0) -> None:
        self.server = socket.create_server(("127.0.0.1", port))
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
        deadline = time.monotonic() + 30
        return [self.answers.get(timeout=max(0.0, deadline - time.monotonic())) for _ in cmds]

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


def main(argv: list[str]) -> None:
    port, workers, *specs = argv
    cmds = [int(cmd) for spec in specs for cmd, n in [spec.split("x")] for _ in range(int(n))]
    gateway = Gateway(int(port))
    try:
        gateway.wait(connected=int(workers))
        answers = Counter(str(cmd) for _, cmd, _, _ in gateway.send(cmds))
    finally:
        gateway.close()
    print(json.dumps(dict(sorted(answers.items()))))


if __name__ == "__main__":
    main(sys.argv[1:])
