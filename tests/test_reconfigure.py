"""configure() again, with the same or another config: exactly the configured targets are
watched, once each, whatever the sequence (issue 11 #2)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

import callwatch
import cwsample.storage as st
import cwsample.views as views
from callwatch.testing import FakeClock, RecordingSender

from conftest import Graphite

A = ["cwsample.storage:get_user", "cwsample.storage:Storage.get_table", "cwsample.storage:Storage.get_static"]
B = ["cwsample.storage:get_users"]
NAMES = ("get_user", "get_users", "Storage_get_table", "Storage_get_static")
#: calls per interval of drive(): get_user 3 (itself, through views' import, inside get_users)
WATCHED_A = {"get_user": 3.0, "Storage_get_table": 1.0, "Storage_get_static": 1.0}
WATCHED_B = {"get_users": 1.0}


def cfg(watch: list[str], **graphite: Any) -> dict[str, Any]:
    return {"watch": watch, "naming": {"host": "h", "worker": "none"}, "spikes": {"enabled": False},
            "graphite": graphite}


def drive() -> None:
    with callwatch.request("r"):
        st.get_user(1)
        views.show(2)
        st.Storage().get_table(3)
        st.Storage.get_static(4)
        st.get_users(5)


def interval(sender: RecordingSender, clock: FakeClock, prefix: str = "callwatch") -> dict[str, float]:
    """Drive one interval and read back the calls counted for each name in it (a name watched
    earlier keeps being sent, with 0: the collector zero-fills series it has seen)."""
    ts = int(clock.time()) // 10 * 10
    drive()
    clock.advance(10)
    callwatch.flush()
    values = sender.values()
    got = {n: values.get((f"{prefix}.h.handler.r.watch.{n}.calls", ts), 0.0) for n in NAMES}
    return {n: v for n, v in got.items() if v}


def originals() -> tuple[Any, ...]:
    return (st.get_user, views.get_user, st.get_users, st.Storage.__dict__["get_table"],
            st.Storage.__dict__["get_static"])


def test_any_sequence_of_configure_and_shutdown_watches_exactly_the_configured_targets() -> None:
    before = originals()
    clock = FakeClock(1_700_000_000)
    sender = RecordingSender()
    with clock:
        steps = [("A", A, WATCHED_A), ("A again", A, WATCHED_A), ("B", B, WATCHED_B), ("shutdown", None, {}),
                 ("A after shutdown", A, WATCHED_A), ("A", A, WATCHED_A), ("B", B, WATCHED_B), ("B again", B, WATCHED_B),
                 ("A", A, WATCHED_A)]
        for label, watch, expected in steps:
            if watch is None:
                callwatch.shutdown()
                assert originals() == before, "shutdown left something patched"
                drive()  # nothing watched, nothing configured
                continue
            callwatch.configure(cfg(watch), sender=sender, clock=clock, start_thread=False, strict=True)
            assert interval(sender, clock) == expected, label
        callwatch.shutdown()
    assert originals() == before


@pytest.mark.graphite
def test_configure_twice_keeps_counting_into_real_carbon(graphite: Graphite) -> None:
    prefix = "rc" + uuid.uuid4().hex[:8]
    t0 = (int(time.time()) - 300) // 10 * 10
    clock = FakeClock(t0)
    conf = cfg(A, host="127.0.0.1", port=graphite.line_port, prefix=prefix)
    with clock:
        for _ in range(3):  # an app factory that configures on every call
            callwatch.configure(conf, clock=clock, start_thread=False, strict=True)
            drive()
            clock.advance(10)
            callwatch.flush()
        callwatch.shutdown()
    got = graphite.wait_for(f"{prefix}.h.handler.r.watch.get_user.calls", t0 - 10, t0 + 40,
                            lambda p: len(p) >= 3)
    assert {ts: v for ts, v in got.items() if ts < t0 + 30} == {t0: 3, t0 + 10: 3, t0 + 20: 3}
