"""Real servers (gunicorn sync/gthread/gevent, uvicorn) -> real carbon -> graphite-web.

Each test drives a known mix of requests, stops the server (workers flush on exit), and
reads the totals per handler and per watched function back through graphite-web's render
API, summed over every worker slot and second: they must equal what was sent, exactly.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from apps import config as app_config
from conftest import Graphite, free_ports, wait_for_port

pytestmark = pytest.mark.graphite

TESTS = Path(__file__).resolve().parent


@contextmanager
def server(cmd: list[str], port: int, config: Path, tmp_path: Path,
           exit_codes: tuple[int, ...] = (0,), env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, **(env or {}), CALLWATCH_CONFIG=str(config),
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    log = open(tmp_path / "server.log", "wb")
    p = subprocess.Popen(cmd, cwd=TESTS, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for_port(port, p, tmp_path / "server.log")
        yield p
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()
    assert p.returncode in exit_codes, (tmp_path / "server.log").read_text()


def get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def drive(port: int, paths: list[str], concurrency: int) -> None:
    with ThreadPoolExecutor(concurrency) as pool:
        statuses = list(pool.map(lambda p: get(port, p), paths))
    assert set(statuses) <= {200, 500}, statuses


MIX = ["/items/3"] * 200 + ["/prices/2"] * 100 + ["/items/1"] * 100 + ["/boom"] * 10
EXPECTED = {
    "list_items.requests": 300,
    "list_items.watch.get_item.calls": 700,
    "list_items.watch.cache_get.calls": 300,
    "list_items.group.db.calls": 700,
    "prices.requests": 100,
    "prices.watch.get_price.calls": 200,
    "boom.requests": 10,
    "boom.errors": 10,
}


def config_for(graphite: Graphite, tmp_path: Path) -> tuple[str, Path]:
    prefix = "srv" + uuid.uuid4().hex[:8]
    cfg = app_config.write(tmp_path / "cw.yaml", port=graphite.line_port, prefix=prefix,
                           slot_dir=tmp_path / "slots")
    return prefix, cfg


def gunicorn(port: int, app: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "10",
            *args, app]


@pytest.mark.parametrize("args", [
    pytest.param(["-w", "4", "--max-requests", "40"], id="sync-4-workers-restarting"),
    pytest.param(["-w", "4", "--max-requests", "40", "--preload"], id="sync-4-workers-preload"),
    pytest.param(["-w", "2", "-k", "gthread", "--threads", "8"], id="gthread-8-threads"),
    pytest.param(["-w", "2", "-k", "gevent", "--worker-connections", "200"], id="gevent"),
])
def test_gunicorn_flask_exact_totals(graphite: Graphite, tmp_path: Path, args: list[str]) -> None:
    prefix, cfg = config_for(graphite, tmp_path)
    (port,) = free_ports(1)
    start = int(time.time())
    with server(gunicorn(port, "apps.flask_app:app", *args), port, cfg, tmp_path):
        drive(port, MIX, concurrency=16)
    assert graphite.totals(prefix, start, EXPECTED) == EXPECTED
    if "--max-requests" in args:  # workers were replaced, yet the slots stay few
        slots = graphite.render(f"{prefix}.*.callwatch.points_sent", start - 5, int(time.time()) + 5)
        assert 1 < len(slots) <= 5, [s["target"] for s in slots]


def test_gunicorn_workers_each_report_their_own_memory(graphite: Graphite, tmp_path: Path) -> None:
    """``memory: {}`` under 4 sync workers: each worker slot sends its own memory and GC
    series, and the request totals stay exact with the gc hook on."""
    prefix = "srv" + uuid.uuid4().hex[:8]
    cfg = app_config.write(tmp_path / "cw.yaml", port=graphite.line_port, prefix=prefix,
                           slot_dir=tmp_path / "slots", memory=True)
    (port,) = free_ports(1)
    start = int(time.time())
    with server(gunicorn(port, "apps.flask_app:app", "-w", "4"), port, cfg, tmp_path):
        drive(port, MIX, concurrency=16)
        time.sleep(2.5)  # every worker flushes at least twice (interval 1 s)
    assert graphite.totals(prefix, start, EXPECTED) == EXPECTED
    end = int(time.time()) + 5
    want = [f"{prefix}.h_w{n}.process.memory.rss_mb" for n in range(4)]
    deadline = time.monotonic() + 20  # carbon makes a new series' file within a few seconds
    while True:
        rss = {s["target"]: [v for v, _ in s["datapoints"] if v is not None]
               for s in graphite.render(f"{prefix}.*.process.memory.rss_mb", start - 5, end)}
        if sorted(rss) == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sorted(rss) == want, sorted(rss)
    assert all(vs and all(10 < v < 16_384 for v in vs) for vs in rss.values()), rss
    blocks = graphite.render(f"{prefix}.*.process.memory.python_blocks", start - 5, end)
    assert len(blocks) == 4


def test_the_leaking_gunicorn_worker_is_the_one_flagged(graphite: Graphite, tmp_path: Path) -> None:
    """4 gthread workers, a census per flush (``leak_window: 2``).  One keep-alive connection
    is served by one worker for its life: its requests make that worker keep 300 objects
    each.  That worker's ``leak_suspects`` goes up; the other three, which take censuses
    too, stay at 0."""
    import http.client
    import json as json_

    prefix = "lk" + uuid.uuid4().hex[:8]
    cfg = app_config.write(tmp_path / "cw.yaml", port=graphite.line_port, prefix=prefix,
                           slot_dir=tmp_path / "slots", memory=True)
    cfg.write_text(cfg.read_text().replace("memory: {}", "memory: {gc: false, census_every: 1, leak_window: 2}"))
    (port,) = free_ports(1)
    start = int(time.time())
    with server(gunicorn(port, "apps.flask_app:app", "-w", "4", "-k", "gthread", "--threads", "2"), port, cfg,
                tmp_path):
        drive(port, ["/items/1"] * 40, concurrency=8)  # every worker serves something
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        leaking = set()
        deadline = time.monotonic() + 8  # 8 censuses of the leaking worker: judged from the 4th
        while time.monotonic() < deadline:
            conn.request("GET", "/leak/300")
            r = conn.getresponse()
            leaking.add(json_.loads(r.read())["worker"])
            time.sleep(0.05)
        conn.close()
    assert len(leaking) == 1, leaking  # one connection, one worker
    (worker,) = leaking
    end = int(time.time()) + 5
    deadline = time.monotonic() + 20
    while True:
        got = {s["target"]: [v for v, _ in s["datapoints"] if v is not None]
               for s in graphite.render(f"{prefix}.*.process.memory.leak_suspects", start - 5, end)}
        if len(got) == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    flagged = {t.split(".")[1] for t, vs in got.items() if any(v > 0 for v in vs)}
    assert len(got) == 4, sorted(got)  # every worker took censuses
    assert flagged == {f"h_{worker}"}, got


def test_gunicorn_django_exact_totals(graphite: Graphite, tmp_path: Path) -> None:
    prefix, cfg = config_for(graphite, tmp_path)
    (port,) = free_ports(1)
    start = int(time.time())
    with server(gunicorn(port, "apps.djsite.wsgi:application", "-w", "2"), port, cfg, tmp_path):
        drive(port, ["/items/3/"] * 120 + ["/boom/"] * 5, concurrency=8)
    expected = {"item_list.requests": 120, "item_list.watch.get_item.calls": 360,
                "item_list.watch.cache_get.calls": 120, "boom.errors": 5}
    assert graphite.totals(prefix, start, expected) == expected


def test_uvicorn_200_in_flight_exact_totals(graphite: Graphite, tmp_path: Path) -> None:
    prefix, cfg = config_for(graphite, tmp_path)
    (port,) = free_ports(1)
    start = int(time.time())

    async def one(path: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
        assert data.startswith(b"HTTP/1.1 200"), data[:100]

    async def main() -> None:
        paths = [f"/items/{1 + i % 4}" for i in range(240)] + ["/prices/3"] * 60
        await asyncio.wait_for(asyncio.gather(*(one(p) for p in paths)), 60)

    cmd = [sys.executable, "-m", "uvicorn", "apps.starlette_app:app", "--port", str(port),
           "--host", "127.0.0.1", "--log-level", "warning", "--backlog", "1024"]
    # uvicorn ends by re-raising SIGTERM after its graceful shutdown: exit status -15.
    # The app holds each request until 200 are in flight (at most 10 s), and counts the
    # most in flight at once inside the middleware: 200 is reached only if the server
    # really serves them concurrently.
    with server(cmd, port, cfg, tmp_path, exit_codes=(0, -signal.SIGTERM), env={"APPS_IN_FLIGHT_GATE": "200"}):
        asyncio.run(main())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/in_flight", timeout=30) as r:
            in_flight_max = json.loads(r.read())["max"]
    expected = {"GET_items_n.requests": 240, "GET_items_n.watch.aget_item.calls": 600,
                "GET_items_n.watch.cache_get.calls": 240, "GET_prices_n.requests": 60,
                "GET_prices_n.watch.get_item.calls": 180}
    assert graphite.totals(prefix, start, expected) == expected
    assert 200 <= in_flight_max <= 300


def test_gevent_game_server_command_router_exact_totals(graphite: Graphite, tmp_path: Path) -> None:
    prefix, cfg = config_for(graphite, tmp_path)
    (port,) = free_ports(1)
    start = int(time.time())

    def client(n: int) -> None:
        with socket.create_connection(("127.0.0.1", port), 10) as s:
            f = s.makefile("rwb")
            for i in range(10):
                f.write(b"2 %d\n" % n if i % 2 else b"3 %d %d\n" % (n, 2 if n % 2 else 7))
                f.flush()
                assert f.readline() == b"ok\n"

    with server([sys.executable, "-m", "apps.gevent_game", str(port)], port, cfg, tmp_path):
        with ThreadPoolExecutor(50) as pool:
            list(pool.map(client, range(50)))
    # 50 clients x 5 logins; 25 clients x 5 joins at 2 players, 25 x 5 at 7
    expected = {"login.requests": 250, "login.watch.get_item.calls": 250, "login.watch.cache_get.calls": 250,
                "join_table.requests": 250, "join_table.watch.get_price.calls": 125 * 2 + 125 * 7,
                "join_table.by.players.7.watch.get_price.calls": 125 * 7}
    assert graphite.totals(prefix, start, expected) == expected
