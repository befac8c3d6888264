"""maple and haven (callwatch.integrations.maple) against the real frameworks.

- A real maple ``Workshop`` with 3 worker processes, fed by ``apps.maple_gateway``: the
  gateway side of maple's worker protocol, written with maple's own ``Task`` and netkit's
  ``Box``.  One worker is stopped mid-interval (maple's master starts a
  replacement), then the whole Workshop (SIGTERM to the master): the totals read back
  from graphite-web are exact, in both set-ups (configured in the master, per worker).
- A real haven ``GHaven`` with 20 gevent clients.
- In-process: names by endpoint or command, routes added later, a second instrument().
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
from maple import Blueprint, Workshop, constants
from netkit.box import Box

import callwatch
from callwatch import _core, _runtime
from apps import config as app_config
from apps import maple_game as game
from apps.maple_gateway import Gateway
from callwatch.integrations.maple import instrument
from conftest import Graphite, free_ports, wait_for_port

TESTS = Path(__file__).resolve().parent
# Long enough that a worker stopped mid-interval is replaced within the same interval.
INTERVAL = 5


@contextmanager
def process(args: list[str], cfg: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ, CALLWATCH_CONFIG=str(cfg),
               PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    with open(log, "wb") as out:
        # A session of its own: whatever happens, the master and its workers end with the test.
        p = subprocess.Popen([sys.executable, *args], cwd=TESTS, env=env, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            yield p
        finally:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(10)


def stop(p: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM to the server (maple's master): it ends with status 0, and so do all the
    processes it started."""
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"did not stop on SIGTERM:\n{log.read_text()}") from None
    assert p.returncode == 0, log.read_text()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(p.pid, 0)  # is anything of its session left?
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of the server still run after it stopped:\n{log.read_text()}")


def config(graphite: Graphite, tmp_path: Path) -> tuple[str, Path]:
    prefix = "mpl" + uuid.uuid4().hex[:8]
    return prefix, app_config.write(tmp_path / "cw.yaml", port=graphite.line_port, prefix=prefix,
                                    slot_dir=tmp_path / "slots", interval=INTERVAL)


def interval_start() -> float:
    """Wait for the start of the next flush interval (bounded: at most INTERVAL s)."""
    began = (time.time() // INTERVAL + 1) * INTERVAL
    time.sleep(began - time.time())
    return began


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
            began = interval_start()
            first = gateway.send(MIX)
            pids = {pid for _, _, _, pid in first if pid}
            assert len(pids) == 3, pids  # every worker served
            victim = min(pids)
            os.kill(victim, signal.SIGTERM)  # maple's master starts a replacement
            gateway.wait(connected=4)
            second = gateway.send(MIX)
            assert victim not in {pid for _, _, _, pid in second}
            # The replacement served in the interval its predecessor sent a part of: unless
            # the hand-off is merged, its flush overwrites that part in carbon.
            assert time.time() < began + INTERVAL, "too slow to restart within one interval"
            stop(master, log)
    finally:
        gateway.close()
    answered = sorted(cmd for _, cmd, _, _ in first + second)
    assert answered == sorted(MIX * 2)
    assert sum(1 for _, _, ret, _ in first + second if ret == constants.RET_INTERNAL) == 10
    assert graphite.totals(prefix, start, MAPLE_EXPECTED) == MAPLE_EXPECTED
    end = int(time.time()) + 5
    serving = {s["target"].split(".")[1] for s in graphite.render(f"{prefix}.*.handler.*.requests", start - 5, end)}
    sending = {s["target"].split(".")[1] for s in graphite.render(f"{prefix}.*.callwatch.points_sent", start - 5, end)}
    # The replacement took its predecessor's slot: three workers, three names.  Configured per
    # worker, the master takes no slot and sends nothing; configured in the master, it keeps
    # the slot it took first and sends only callwatch's own metrics under it.
    if mode == "worker":
        assert serving == sending == {"h_w0", "h_w1", "h_w2"}, (serving, sending)
    else:
        assert (serving, sending) == ({"h_w1", "h_w2", "h_w3"}, {"h_w0", "h_w1", "h_w2", "h_w3"})


HAVEN_CLIENTS, HAVEN_ROUNDS = 20, 6
# 20 clients x 6 rounds of (login x2, lobby.join, table.join, boom), written out.
HAVEN_EXPECTED = {
    "login.requests": 240,
    "login.watch.get_item.calls": 240,
    "login.watch.get_price.calls": 240,
    "lobby_join.requests": 120,
    "lobby_join.watch.get_price.calls": 240,
    "table_join.requests": 120,
    "table_join.watch.get_item.calls": 120,
    "boom.requests": 120,
    "boom.errors": 120,
    "boom.watch.cache_get.calls": 120,
}


@pytest.mark.graphite
def test_haven_ghaven_20_gevent_clients_exact(graphite: Graphite, tmp_path: Path) -> None:
    prefix, cfg = config(graphite, tmp_path)
    (port,) = free_ports(1)
    log = tmp_path / "haven.log"
    start = int(time.time())
    with process(["-m", "apps.maple_haven", "serve", str(port)], cfg, log) as server:
        wait_for_port(port, server, log)
        clients = subprocess.run([sys.executable, "-m", "apps.maple_haven", "clients", str(port),
                                  str(HAVEN_CLIENTS), str(HAVEN_ROUNDS)], cwd=TESTS, capture_output=True,
                                 text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(TESTS)))
        assert clients.returncode == 0, clients.stderr
        stop(server, log)
    assert json.loads(clients.stdout) == {"1": 240, "2": 120, "10": 120, "20": 120}
    assert graphite.totals(prefix, start, HAVEN_EXPECTED) == HAVEN_EXPECTED


# --------------------------------------------------------------------------------------
# In-process: what instrument() does to an app's routes (maple's Workshop and haven's
# GHaven share the routing mixin), observed through the collector.


@pytest.fixture
def watched() -> Iterator[None]:
    callwatch.configure({"watch": [{"target": "apps.shop:get_*"}]}, start_thread=False, strict=True)
    yield
    callwatch.shutdown()


def make_app(kind: str) -> tuple[Any, Any]:
    if kind == "maple":
        return Workshop(), Blueprint
    from haven import GBlueprint, GHaven

    return GHaven(Box), GBlueprint


def serve(app: Any, *cmds: int) -> dict[str, tuple[int, int, int]]:
    """Call each command's view as maple and haven do (the app's rule, per request), then
    {handler: (requests, errors, get_item calls)} of what was counted."""
    for cmd in cmds:
        try:
            app.get_route_rule(cmd)["view_func"](object())
        except RuntimeError:
            pass
    snap = _core.collector.swap(0)
    return {h: (hs.requests, hs.errors, sum(fs.calls for fs in hs.funcs.values())) for h, hs in snap.handlers.items()}


def add_routes(app: Any, blueprint: Any, *, early: bool) -> None:
    from apps import shop

    if early:
        @app.route(1)
        def login(request: Any) -> None:
            shop.get_item(1)
        return

    @app.route(2)
    def boom(request: Any) -> None:
        raise RuntimeError("boom")

    lobby, table = blueprint("lobby"), blueprint("table")

    @lobby.route(10)
    def join(request: Any) -> None:
        shop.get_item(1)

    @table.route(20)  # type: ignore[no-redef]
    def join(request: Any) -> None:  # noqa: F811
        shop.get_item(1)
        shop.get_item(2)

    app.register_blueprint(lobby)
    app.register_blueprint(table)


@pytest.mark.parametrize("kind", ["maple", "haven"])
def test_every_route_named_by_endpoint_present_and_future(watched: None, kind: str) -> None:
    app, blueprint = make_app(kind)
    add_routes(app, blueprint, early=True)
    assert instrument(app) is app
    add_routes(app, blueprint, early=False)
    app._merge_routes()  # what run() does first: the blueprints' routes join the app's
    assert serve(app, 1, 1, 2, 10, 20, 20, 20) == {
        "login": (2, 0, 2), "boom": (1, 1, 0), "lobby.join": (1, 0, 1), "table.join": (3, 0, 6)}


@pytest.mark.parametrize("kind", ["maple", "haven"])
def test_names_by_command_number(watched: None, kind: str) -> None:
    app, blueprint = make_app(kind)
    add_routes(app, blueprint, early=True)
    instrument(app, by="cmd")
    add_routes(app, blueprint, early=False)
    app._merge_routes()
    assert serve(app, 1, 10, 20) == {"cmd_1": (1, 0, 1), "cmd_10": (1, 0, 1), "cmd_20": (1, 0, 2)}


def test_instrumented_after_run_a_second_call_and_a_view_registered_twice(watched: None) -> None:
    app, blueprint = make_app("maple")
    add_routes(app, blueprint, early=True)
    add_routes(app, blueprint, early=False)
    app._merge_routes()  # instrument() called in a worker: the blueprints are merged already
    instrument(app)
    instrument(app, by="cmd")  # the app is instrumented already: nothing changes
    view = app.get_route_rule(1)["view_func"].__wrapped__
    app.add_route_rule(1, view)  # maple accepts the same function again
    assert serve(app, 1, 10, 20) == {"login": (1, 0, 1), "lobby.join": (1, 0, 1), "table.join": (1, 0, 2)}


def test_a_view_that_is_already_a_handler_keeps_its_name(watched: None) -> None:
    app = Workshop()

    @app.route(5)
    @callwatch.handler("custom")
    def view(request: Any) -> None:
        pass

    instrument(app)
    assert serve(app, 5) == {"custom": (1, 0, 0)}


def test_by_must_be_endpoint_or_cmd() -> None:
    with pytest.raises(ValueError, match="by must be 'endpoint' or 'cmd'"):
        instrument(Workshop(), by="name")  # type: ignore[arg-type]


def test_config_configures_at_worker_start_and_shuts_down_at_stop(tcp_receiver: Any) -> None:
    app = Workshop()
    add_routes(app, Blueprint, early=True)
    cfg = {"graphite": {"host": "127.0.0.1", "port": tcp_receiver.port, "prefix": "mw", "interval": 3600},
           "naming": {"host": "h"}}
    instrument(app, config=cfg)
    assert _runtime.active() is None  # not in the master
    app.events.start_worker(object())  # what maple's Worker.run does first, in the worker
    assert _runtime.active() is not None
    app.get_route_rule(1)["view_func"](object())
    app.events.stop_worker(object())  # what it does last, before multiprocessing's os._exit
    assert _runtime.active() is None
    deadline = time.monotonic() + 10
    while b"mw.h_w0.handler.login.requests 1 " not in tcp_receiver.data and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b"mw.h_w0.handler.login.requests 1 " in tcp_receiver.data


def test_an_endpoint_two_commands_share_is_split_with_one_warning(watched: None,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    app = instrument(Workshop())

    @app.route(10)
    def join(request: Any) -> None:
        pass

    @app.route(11)  # type: ignore[no-redef]
    def join(request: Any) -> None:  # noqa: F811 (maple names both endpoints "join")
        pass

    assert serve(app, 10, 11, 11) == {"join": (1, 0, 0), "join_11": (2, 0, 0)}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["callwatch: the maple endpoint 'join' is used by commands 10 and 11; command 11 is "
                        "reported as 'join_11'. Fix: give one of them its own endpoint (route(11, endpoint=...))"]
