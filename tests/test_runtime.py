"""configure()/shutdown(): lifecycle, nothing left behind, final flush, re-configure."""

from __future__ import annotations

import atexit
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import callwatch
from callwatch import _runtime
from callwatch.aggregate import Snapshot
from callwatch.testing import FakeClock, RecordingSender

import cwsample.storage as st

from conftest import TcpReceiver

T0 = 1_700_000_000
CFG = {"graphite": {"host": "unused.invalid", "interval": 10, "prefix": "cw"}, "naming": {"host": "h"},
       "watch": [{"target": "cwsample.storage:get_user", "group": "db"}]}


def test_shutdown_leaves_nothing_patched_or_running() -> None:
    original = st.get_user
    rt = callwatch.configure(CFG, sender=RecordingSender(), strict=True)
    assert rt is not None and rt.exporter.running
    assert st.get_user is not original
    callwatch.shutdown()
    assert st.get_user is original
    assert not rt.exporter.running
    assert not [t for t in threading.enumerate() if t.name == "callwatch-flush"]
    assert _runtime.active() is None
    callwatch.shutdown()  # twice is fine


def test_final_flush_on_shutdown_sends_the_partial_interval() -> None:
    clock, sender = FakeClock(T0 + 4), RecordingSender()
    with clock:
        callwatch.configure(CFG, sender=sender, clock=clock, start_thread=False, strict=True)
        with callwatch.request("login"):
            st.get_user(1)
        callwatch.shutdown()
    v = sender.values()
    assert v[("cw.h_w0.handler.login.requests", T0)] == 1
    assert v[("cw.h_w0.handler.login.watch.get_user.calls", T0)] == 1


def test_configure_again_in_the_same_interval_resends_the_whole_interval() -> None:
    clock, sender = FakeClock(T0 + 1), RecordingSender()
    with clock:
        callwatch.configure(CFG, sender=sender, clock=clock, start_thread=False, strict=True)
        for _ in range(3):
            with callwatch.request("login"):
                st.get_user(1)
        clock.advance(2)
        callwatch.configure(CFG, sender=sender, clock=clock, start_thread=False, strict=True)  # shuts down first
        assert sender.values()[("cw.h_w0.handler.login.requests", T0)] == 3
        for _ in range(2):
            with callwatch.request("login"):
                st.get_user(1)
        clock.advance(10)
        callwatch.flush()
    # carbon keeps the last value per timestamp: 5, not 2
    assert sender.values()[("cw.h_w0.handler.login.requests", T0)] == 5


def test_configure_in_a_later_interval_does_not_resend() -> None:
    clock, sender = FakeClock(T0 + 1), RecordingSender()
    with clock:
        callwatch.configure(CFG, sender=sender, clock=clock, start_thread=False, strict=True)
        with callwatch.request("login"):
            pass
        callwatch.shutdown()
        clock.advance(20)
        callwatch.configure(CFG, sender=sender, clock=clock, start_thread=False, strict=True)
        with callwatch.request("login"):
            pass
        clock.advance(10)
        callwatch.flush()
    v = sender.values()
    assert v[("cw.h_w0.handler.login.requests", T0)] == 1
    assert v[("cw.h_w0.handler.login.requests", T0 + 20)] == 1


def test_bad_config_logs_one_message_and_changes_nothing(caplog: pytest.LogCaptureFixture,
                                                          tmp_path: Path) -> None:
    p = tmp_path / "cw.yaml"
    p.write_text("graphite:\n  port: nope\nwatch:\n  - cwsample.storage:get_usr\n")
    original = st.get_user
    with caplog.at_level(logging.ERROR, logger="callwatch"):
        assert callwatch.configure(p) is None
    assert [r.getMessage() for r in caplog.records] == [
        "callwatch: configuration not used, callwatch stays off:\n"
        f"{p}:2: graphite.port: expected a whole number, got 'nope'. Fix: use carbon's plaintext port, e.g. port: 2003\n"
        f"{p}:4: target: 'cwsample.storage' has no attribute 'get_usr' (from 'cwsample.storage:get_usr'). "
        "Fix: did you mean 'get_user' or 'get_users'?"]  # schema and target problems in one message
    assert st.get_user is original
    with pytest.raises(callwatch.ConfigError):
        callwatch.configure(p, strict=True)


def test_unresolvable_target_is_a_located_config_error(tmp_path: Path) -> None:
    p = tmp_path / "cw.yaml"
    p.write_text("watch:\n  - cwsample.storage:get_usr\n")
    with pytest.raises(callwatch.ConfigError) as ei:
        callwatch.configure(p, strict=True)
    assert str(ei.value).startswith(f"{p}:2: target: 'cwsample.storage' has no attribute 'get_usr'")


def test_disabled_config_patches_nothing() -> None:
    original = st.get_user
    assert callwatch.configure({**CFG, "enabled": False}, strict=True) is None
    assert st.get_user is original and _runtime.active() is None


class OffsetClock:
    """The system's wall clock moved by a fixed offset (a fake of ``time.time``)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset


def test_flush_thread_flushes_at_wall_clock_multiples_of_the_interval() -> None:
    # configure() 0.4 s before a multiple of 3: a flush clock counting from configure()
    # (or aligned to whole seconds only) would cut at x.6 or at non-multiples of 3.
    iv = 3
    now = time.time()
    clock = OffsetClock((now // iv + 2) * iv - 0.4 - now)
    sender = RecordingSender()
    snaps: list[tuple[float, float, float]] = []  # (start, end, wall time when handed out)
    two = threading.Event()

    def sink(s: Snapshot) -> None:
        snaps.append((s.start, s.end, clock.time()))
        if len(snaps) == 2:
            two.set()

    rt = callwatch.configure({"graphite": {"host": "unused.invalid", "interval": iv}}, sender=sender, clock=clock,
                             on_snapshot=sink, strict=True)
    first_start = rt.exporter.collector.start if rt is not None else None
    with callwatch.request("tick"):
        pass
    assert two.wait(10), snaps
    callwatch.shutdown()
    assert first_start is not None and first_start % iv == 0
    (s1, e1, at1), (s2, e2, at2) = snaps[:2]
    assert (s1, e1, s2, e2) == (first_start, first_start + iv, first_start + iv, first_start + 2 * iv)
    assert e1 <= at1 < e1 + 2 and e2 <= at2 < e2 + 2  # woken at the boundary, not an interval (3 s) late
    assert len(sender.payloads) >= 2


def test_interpreter_exit_flushes_the_last_interval(tcp_receiver: TcpReceiver, tmp_path: Path) -> None:
    script = (
        "import callwatch\n"
        f"callwatch.configure({{'graphite': {{'host': '127.0.0.1', 'port': {tcp_receiver.port}, "
        f"'interval': 60, 'prefix': 'exit'}}, 'naming': {{'host': 'h', 'slot_dir': '{tmp_path}'}}}}, strict=True)\n"
        "for _ in range(7):\n"
        "    with callwatch.request('job'):\n"
        "        pass\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=30)
    assert b"exit.h_w0.handler.job.requests 7 " in tcp_receiver.data


def test_atexit_hook_is_removed_by_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[object] = []
    monkeypatch.setattr(atexit, "register", lambda f: registered.append(f))
    monkeypatch.setattr(atexit, "unregister", lambda f: registered.remove(f))
    callwatch.configure(CFG, sender=RecordingSender(), start_thread=False, strict=True)
    assert registered == [_runtime._at_exit]
    callwatch.shutdown()
    assert registered == []


def test_exit_while_a_flush_waits_on_a_peer_that_never_reads(tmp_path: Path) -> None:
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)  # accepts (in the kernel) but nobody ever reads
    try:
        script = (
            "import callwatch\n"
            f"callwatch.configure({{'graphite': {{'host': '127.0.0.1', 'port': {srv.getsockname()[1]}, "
            f"'interval': 60, 'timeout': 0.5}}, 'naming': {{'slot_dir': '{tmp_path}'}}}}, strict=True)\n"
            "with callwatch.request('job'):\n"
            "    pass\n"
        )
        t = time.monotonic()
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - t < 10  # the final flush gave up after its timeout: no hang
        assert "cannot send to Graphite" in r.stderr
    finally:
        srv.close()


# -- requests in flight at shutdown ----------------------------------------------------


def test_a_request_in_flight_at_shutdown_is_sent_by_the_next_configure_in_the_same_interval() -> None:
    clock, sender = FakeClock(T0 + 1), RecordingSender()
    with clock:
        callwatch.configure(CFG, sender=sender, clock=clock, start_thread=False, strict=True)
        with callwatch.request("login"):
            pass
        with callwatch.request("slow"):
            callwatch.shutdown()  # the final flush: "slow" has not finished
        assert ("cw.h_w0.handler.slow.requests", T0) not in sender.values()
        assert sender.values()[("cw.h_w0.handler.login.requests", T0)] == 1
        clock.advance(2)
        callwatch.configure(CFG, sender=sender, clock=clock, start_thread=False, strict=True)
        clock.advance(10)
        callwatch.flush()
    v = sender.values()  # the whole interval again, the finished request included
    assert v[("cw.h_w0.handler.slow.requests", T0)] == 1
    assert v[("cw.h_w0.handler.login.requests", T0)] == 1


def test_a_request_in_flight_at_shutdown_is_sent_by_a_configure_in_a_later_interval() -> None:
    clock, sender = FakeClock(T0 + 1), RecordingSender()
    with clock:
        callwatch.configure(CFG, sender=sender, clock=clock, start_thread=False, strict=True)
        with callwatch.request("slow"):
            callwatch.shutdown()
            clock.advance(0.25)
        clock.advance(30)
        callwatch.configure(CFG, sender=sender, clock=clock, start_thread=False, strict=True)
        clock.advance(10)
        callwatch.flush()
    v = sender.values()
    assert v[("cw.h_w0.handler.slow.requests", T0 + 30)] == 1  # counted in the interval it is sent with
    assert v[("cw.h_w0.handler.slow.response_ms.max", T0 + 30)] == 250.0
    assert ("cw.h_w0.handler.slow.requests", T0) not in v


# -- configure() never raises into the host ---------------------------------------------


def test_an_unexpected_error_while_starting_is_logged_and_undone(monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    original = st.get_user

    def broken(*args: object, **kwargs: object) -> None:
        assert st.get_user is not original  # the targets were patched when this runs
        raise RuntimeError("boom")

    monkeypatch.setattr(_runtime, "Exporter", broken)
    with caplog.at_level(logging.ERROR, logger="callwatch"):
        assert callwatch.configure(CFG, sender=RecordingSender()) is None
    assert [r.getMessage() for r in caplog.records] == ["callwatch: could not start, callwatch stays off"]
    assert caplog.records[0].exc_info is not None and "boom" in caplog.text
    assert st.get_user is original and _runtime.active() is None
    assert not [t for t in threading.enumerate() if t.name == "callwatch-flush"]
    with pytest.raises(callwatch.ConfigError) as ei:
        callwatch.configure(CFG, sender=RecordingSender(), strict=True)
    assert str(ei.value) == ("<dict>: callwatch could not start (RuntimeError: boom). "
                             "Fix: the log has the traceback; please report it")
    assert st.get_user is original and _runtime.active() is None


def test_system_exit_while_preparing_does_not_end_the_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def exits(source: object) -> None:
        raise SystemExit(3)

    monkeypatch.setattr(_runtime, "prepare", exits)
    assert callwatch.configure(CFG) is None
    p = tmp_path / "cw.yaml"
    with pytest.raises(callwatch.ConfigError, match=f"^{p}: callwatch could not start \\(SystemExit: 3\\)"):
        callwatch.configure(p, strict=True)


def test_a_failing_configure_leaves_the_previous_configuration_off(monkeypatch: pytest.MonkeyPatch) -> None:
    original = st.get_user
    assert callwatch.configure(CFG, sender=RecordingSender(), start_thread=False, strict=True) is not None
    monkeypatch.setattr(_runtime, "_claim_slot", lambda cfg: 1 / 0)
    assert callwatch.configure(CFG, sender=RecordingSender()) is None
    assert st.get_user is original and _runtime.active() is None
