"""``callwatch alerts check`` against a hostile graphite-web (issue 11 #9): a real server on
loopback that drips, answers JSON of the wrong shape, or a body without end.  Each case
must end as UNKNOWN (exit 3) with one line saying why, within the deadline."""

from __future__ import annotations

import re
import socketserver
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from callwatch.cli import main

JSON_HEAD = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n"


class _Hostile(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(5)
        try:
            while b"\r\n\r\n" not in (data := self.request.recv(65536)):
                if not data:
                    return
            self.server.behave(self.request)  # type: ignore[attr-defined]
        except OSError:  # the client hung up: what a cut at the deadline looks like here
            pass


class HostileServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Hostile)
        self.mode = "json"
        self.body = b"[]"
        self.stop_at = time.monotonic() + 120  # every loop below ends by then at the latest

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def behave(self, sock: object) -> None:
        send = sock.sendall  # type: ignore[attr-defined]
        if self.mode == "slow-json":  # each answer within a request's timeout, not all of them
            time.sleep(1.2)
        if self.mode in ("json", "slow-json"):
            send(JSON_HEAD + b"Content-Length: %d\r\n\r\n" % len(self.body) + self.body)
        elif self.mode == "drip-body":
            send(JSON_HEAD + b"\r\n")
            self._drip(send, b"[" + b" " * 1000)
        elif self.mode == "drip-headers":
            self._drip(send, JSON_HEAD + b"X-Slow: " + b"a" * 1000)
        elif self.mode == "huge":  # 1.5 GB announced, sent as fast as it is read
            send(JSON_HEAD + b"Content-Length: 1500000000\r\n\r\n[")
            chunk = b" " * 65536
            for _ in range(1_500_000_000 // len(chunk)):
                if time.monotonic() > self.stop_at:
                    return
                send(chunk)

    def _drip(self, send: object, data: bytes) -> None:
        for i in range(len(data)):  # one byte every 2 s
            if time.monotonic() > self.stop_at:
                return
            send(data[i:i + 1])  # type: ignore[operator]
            time.sleep(2)


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    srv = HostileServer()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.stop_at = 0  # ends the drip and huge loops
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "cw.yaml"
    p.write_text("graphite: {prefix: cw}\n")
    return p


def run_check(config: Path, url: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, float]:
    t0 = time.monotonic()
    code = main(["alerts", "check", "--config", str(config), "--graphite-web", url, *extra])
    return code, capsys.readouterr().out, time.monotonic() - t0


@pytest.mark.parametrize("mode", ["drip-body", "drip-headers"])
def test_a_dripping_server_is_cut_at_the_deadline(hostile: HostileServer, config: Path,
                                                  capsys: pytest.CaptureFixture[str], mode: str) -> None:
    hostile.mode = mode
    code, out, took = run_check(config, hostile.url, capsys, "--timeout", "3")
    assert code == 3, out
    lines = out.splitlines()
    assert lines[0] == "CALLWATCH UNKNOWN - 1 unknown"
    assert lines[1].startswith(f"UNKNOWN graphite: graphite-web at {hostile.url} did not answer within 3.0 s "
                               "(the deadline) for ")
    assert len(lines) == 2
    assert 2.9 < took < 5.0  # the whole check, not 3 s per byte or per request


@pytest.mark.parametrize("body, why", [
    (b'[{"target": "cw.x.handler.a.requests"}]', "(series 0 has no target and datapoints list)"),
    (b"[1, 2, 3]", "(series 0 has no target and datapoints list)"),
    (b'{"error": "nope"}', ""),
    (b'[{"target": "t", "datapoints": [["12", 1700000000]]}]', "(series 't' has the point ['12', 1700000000], "
                                                                "not [number or null, timestamp])"),
    (b'[{"target": "t", "datapoints": [[NaN, 1700000000]]}]', "(series 't' has the point [nan, 1700000000], "
                                                               "not [number or null, timestamp])"),
    (b'[{"target": "t", "datapoints": [[1.0]]}]', "(series 't' has the point [1.0], "
                                                  "not [number or null, timestamp])"),
    (b'[{"target": "t", "datapoints": [[true, 1700000000]]}]', "(series 't' has the point [True, 1700000000], "
                                                                "not [number or null, timestamp])"),
], ids=["no-datapoints", "list-of-ints", "an-object", "a-string", "nan", "short-point", "a-bool"])
def test_json_of_the_wrong_shape_is_unknown_in_one_line(hostile: HostileServer, config: Path,
                                                        capsys: pytest.CaptureFixture[str], body: bytes,
                                                        why: str) -> None:
    hostile.body = body
    code, out, _ = run_check(config, hostile.url, capsys)
    assert code == 3
    assert out.splitlines() == [
        "CALLWATCH UNKNOWN - 1 unknown",
        f"UNKNOWN graphite: graphite-web at {hostile.url} answered JSON that is not a series list" + (
            f" {why}" if why else "")]


def test_not_json_is_unknown(hostile: HostileServer, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hostile.body = b"<html>Server Error</html>"
    code, out, _ = run_check(config, hostile.url, capsys)
    assert (code, out.splitlines()[1]) == (3, f"UNKNOWN graphite: graphite-web at {hostile.url} did not answer JSON")


def test_a_huge_body_stops_at_the_size_cap(hostile: HostileServer, config: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import tracemalloc

    hostile.mode = "huge"
    tracemalloc.start()
    try:
        code, out, took = run_check(config, hostile.url, capsys)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 3
    assert out.splitlines()[1].startswith(f"UNKNOWN graphite: graphite-web at {hostile.url} answered over "
                                          "33554432 bytes for ")
    assert peak < 100 * 2**20  # the cap (32 MiB) and its copies, not 1.5 GB
    assert took < 30


def test_the_deadline_covers_the_whole_check(hostile: HostileServer, config: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    hostile.mode = "slow-json"  # 1.2 s per answer; the check asks three times
    hostile.body = b'[{"target": "h1_w0.deal", "datapoints": [[1.0, %d]]}]' % int(time.time())
    code, out, took = run_check(config, hostile.url, capsys, "--timeout", "2")
    assert code == 3
    line = out.splitlines()[1]  # the second request had what was left of the 2 s
    assert re.match(rf"UNKNOWN graphite: graphite-web at {re.escape(hostile.url)} did not answer within "
                    r"0\.[5-8] s \(the deadline\) for ", line), line
    assert 1.9 < took < 3.0


def test_a_timeout_that_is_not_positive_is_unknown(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_check(config, "http://127.0.0.1:9", capsys, "--timeout", "0")
    assert (code, out) == (3, "UNKNOWN callwatch: --timeout 0: give a number of seconds > 0\n")
