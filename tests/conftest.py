"""Shared fixtures: a clean callwatch per test, and the real Graphite stack per session."""

from __future__ import annotations

import gc
import json
import os
import socket
import socketserver
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from hypothesis import settings

import callwatch
from callwatch import _core, _runtime

ROOT = Path(__file__).resolve().parent.parent

# CI runs hypothesis with a fixed seed (the same examples every run, so a red build is
# reproducible); locally examples vary, which finds more.  No example database in CI.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

#: The one CALLWATCH_* variable a test run keeps: it selects the watched wrapper (C or pure
#: Python) for the whole run, and subprocesses started by tests must use the same one.
KEPT_ENV = ("CALLWATCH_PURE_PYTHON",)

#: The watched wrappers a test that runs with each should use: both, unless this run is
#: the pure-Python one (scripts/test runs tests/test_core.py with both separately).
WRAPPERS = ("Python",) if os.environ.get("CALLWATCH_PURE_PYTHON") else ("C", "Python")


@pytest.fixture(autouse=True)
def clean_callwatch(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts and ends with nothing configured, patched or running, and with no
    ``CALLWATCH_*`` environment variable but the wrapper switch.

    Worker slots live in a directory of the test's own, so names are always ``..._w0``.
    """
    from callwatch import _slots

    for key in list(os.environ):
        # A developer's own CALLWATCH_GRAPHITE or CALLWATCH_DISABLED must not change results.
        if key.startswith("CALLWATCH_") and key not in KEPT_ENV:
            monkeypatch.delenv(key)
    slot_dir = tmp_path_factory.mktemp("slots")
    monkeypatch.setattr(_slots, "default_dir", lambda: slot_dir)
    callwatch.shutdown()
    _core.collector.reset()
    _runtime._last_partial = None
    yield
    callwatch.shutdown()
    _runtime._last_partial = None
    assert _core._get() is None, "a request context leaked out of the test"
    assert not [t for t in threading.enumerate() if t.name == "callwatch-flush"], "flush thread left running"
    _core.collector.reset()


class _Collect(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = b""
        while chunk := self.request.recv(65536):
            data += chunk
        self.server.received.append(data)  # type: ignore[attr-defined]


class TcpReceiver(socketserver.ThreadingTCPServer):
    """A local plaintext receiver (a unit-test stand-in for carbon's line port)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Collect)
        self.received: list[bytes] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def data(self) -> bytes:
        return b"".join(self.received)


@pytest.fixture
def tcp_receiver() -> Iterator[TcpReceiver]:
    srv = TcpReceiver()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


@contextmanager
def only_explicit_collections() -> Iterator[None]:
    """The GC's automatic collections off: the collections a test counts are the ones it
    makes (gc.collect), so the counts are exact."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for_port(port: int, proc: subprocess.Popen[Any], log: Path, timeout: float = 30.0) -> None:
    """Until a server answers on loopback ``port``; fails with its log if ``proc`` exits or
    ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server on port {port} did not start: {log.read_text()}")
            time.sleep(0.1)


RENDER_TRIES = 5


@dataclass
class Graphite:
    base: Path
    line_port: int
    web_url: str

    def render(self, target: str, start: int, end: int) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"target": target, "from": start, "until": end, "format": "json"})
        for attempt in range(RENDER_TRIES):
            try:
                with urllib.request.urlopen(f"{self.web_url}/render?{q}", timeout=10) as r:
                    return json.loads(r.read())  # type: ignore[no-any-return]
            except urllib.error.HTTPError as e:
                # graphite-web answers 500 when it reads a whisper file that carbon is still
                # creating (CorruptWhisperFile: "Unable to read archive1 metadata" in its
                # exception.log): the file is whole a moment later, so a 500 is retried; one
                # that persists is raised.
                if e.code != 500 or attempt == RENDER_TRIES - 1:
                    raise
                time.sleep(0.3)
        raise AssertionError("unreachable")

    def points(self, target: str, start: int, end: int) -> dict[int, float]:
        """{timestamp: value} of the non-null points of a single-series target."""
        series = self.render(target, start, end)
        out: dict[int, float] = {}
        for s in series:
            for value, ts in s["datapoints"]:
                if value is not None:
                    out[ts] = value
        return out

    def wait_for(self, target: str, start: int, end: int, done: Callable[[dict[int, float]], bool],
                 timeout: float = 15.0) -> dict[int, float]:
        """Poll /render until ``done(points)`` (new metrics need ~1 s to get a file)."""
        deadline = time.monotonic() + timeout
        while True:
            pts = self.points(target, start, end)
            if done(pts) or time.monotonic() > deadline:
                return pts
            time.sleep(0.2)

    def totals(self, prefix: str, start: int, expected: dict[str, int]) -> dict[str, int]:
        """Sum over all worker slots and all seconds of each metric path below the origin,
        polled until it equals ``expected`` or 20 s pass."""
        def read() -> dict[str, int]:
            out = {}
            for metric in expected:
                pts = self.points(f"sumSeries({prefix}.*.handler.{metric})", start - 5, int(time.time()) + 5)
                out[metric] = int(round(sum(pts.values())))
            return out

        deadline = time.monotonic() + 20
        got = read()
        while got != expected and time.monotonic() < deadline:
            time.sleep(0.3)
            got = read()
        return got

    def series(self, target: str, start: int, end: int) -> dict[str, dict[int, float]]:
        return {s["target"]: {ts: v for v, ts in s["datapoints"] if v is not None}
                for s in self.render(target, start, end)}


@pytest.fixture(scope="session")
def graphite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Graphite]:
    """A real carbon-cache and graphite-web on loopback (scripts/graphite-up)."""
    base = tmp_path_factory.mktemp("graphite")
    line, pickle, query, web = free_ports(4)
    env = dict(os.environ, CARBON_LINE_PORT=str(line), CARBON_PICKLE_PORT=str(pickle),
               CARBON_QUERY_PORT=str(query), GRAPHITE_WEB_PORT=str(web))
    up = subprocess.run([str(ROOT / "scripts" / "graphite-up"), str(base)], env=env,
                        capture_output=True, text=True, timeout=600)
    if up.returncode != 0:
        pytest.fail(f"scripts/graphite-up failed:\n{up.stdout}\n{up.stderr}")
    try:
        yield Graphite(base, line, f"http://127.0.0.1:{web}")
    finally:
        subprocess.run([str(ROOT / "scripts" / "graphite-down"), str(base)], timeout=60)


@pytest.fixture(scope="session")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real redis-server (Debian's) on a free loopback port, without persistence."""
    (port,) = free_ports(1)
    workdir = tmp_path_factory.mktemp("redis")
    p = subprocess.Popen(["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", str(workdir)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), 0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if p.poll() is not None or time.monotonic() > deadline:
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
        yield port
    finally:
        p.terminate()
        p.wait(10)
