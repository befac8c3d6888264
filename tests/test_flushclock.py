"""The flush clock: intervals cut at wall-clock multiples, and wall-clock steps (NTP, a VM
resumed, an operator) neither stop flushing nor make a flood of catch-up intervals."""

from __future__ import annotations

import logging
import threading
import time

import pytest

import callwatch
from callwatch.aggregate import Snapshot
from callwatch.testing import FakeClock, RecordingSender

T0 = 1_700_000_000  # a multiple of 10
HOUR = 3600


def setup(clock: FakeClock, sender: RecordingSender) -> None:
    callwatch.configure({"graphite": {"host": "unused.invalid", "interval": 10, "prefix": "cw"},
                         "naming": {"host": "h"}, "spikes": {"enabled": False}},
                        sender=sender, clock=clock, start_thread=False, strict=True)


def requests(n: int) -> None:
    for _ in range(n):
        with callwatch.request("job"):
            pass


def clock_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if "wall clock" in r.getMessage() and r.levelno == logging.WARNING]


def test_clock_stepping_back_an_hour_resumes_at_the_next_boundary(caplog: pytest.LogCaptureFixture) -> None:
    clock, sender = FakeClock(T0 + 3), RecordingSender()
    with clock, caplog.at_level(logging.WARNING, logger="callwatch"):
        setup(clock, sender)
        requests(2)
        clock.advance(7)  # T0 + 10: the interval [T0, T0 + 10) is over ...
        clock.step(-HOUR - 5)  # ... but the wall clock now reads T0 + 5 - 3600
        first = callwatch.flush()
        requests(3)
        clock.advance(5)  # T0 + 10 - 3600: the next multiple of 10 after the step
        second = callwatch.flush()
        requests(4)
        clock.advance(10)
        third = callwatch.flush()
    assert first is not None and (first.start, first.end) == (T0, T0 + 10)
    assert second is not None and (second.start, second.end) == (T0 - HOUR, T0 - HOUR + 10)
    assert third is not None and (third.start, third.end) == (T0 - HOUR + 10, T0 - HOUR + 20)
    v = sender.values()
    assert v[("cw.h_w0.handler.job.requests", T0)] == 2
    assert v[("cw.h_w0.handler.job.requests", T0 - HOUR)] == 3
    assert v[("cw.h_w0.handler.job.requests", T0 - HOUR + 10)] == 4
    # self-metrics go on too: one points_sent per interval sent
    assert sorted(t for (n, t) in v if n == "cw.h_w0.callwatch.points_sent") == [T0 - HOUR, T0 - HOUR + 10, T0]
    (warning,) = clock_warnings(caplog)
    assert warning == ("callwatch: the wall clock went back by about 3605 s; the interval that began at "
                       "1700000000 is sent now, and flushing goes on at multiples of 10 s from 1699996410")


def test_clock_stepping_forward_an_hour_sends_one_interval_not_a_flood(caplog: pytest.LogCaptureFixture) -> None:
    clock, sender = FakeClock(T0 + 3), RecordingSender()
    with clock, caplog.at_level(logging.WARNING, logger="callwatch"):
        setup(clock, sender)
        requests(2)
        clock.step(HOUR)  # T0 + 3603
        first = callwatch.flush()
        requests(5)
        clock.advance(7)  # T0 + 3610
        second = callwatch.flush()
        assert callwatch.flush() is None  # nothing more is due
    assert first is not None and (first.start, first.end) == (T0, T0 + HOUR)
    assert second is not None and (second.start, second.end) == (T0 + HOUR, T0 + HOUR + 10)
    v = sender.values()
    assert sorted({t for (_, t) in v}) == [T0, T0 + HOUR]  # no zero-filled intervals in between
    assert v[("cw.h_w0.handler.job.requests", T0)] == 2
    assert v[("cw.h_w0.handler.job.requests", T0 + HOUR)] == 5
    (warning,) = clock_warnings(caplog)
    assert warning == ("callwatch: no flush for 3603 s (the wall clock jumped forward, or the process was "
                       "suspended); what was counted since 1700000000 is sent as that one interval, and "
                       "flushing goes on at multiples of 10 s from 1700003610")


def test_a_step_back_smaller_than_an_interval_just_lengthens_it(caplog: pytest.LogCaptureFixture) -> None:
    clock, sender = FakeClock(T0 + 3), RecordingSender()
    with clock, caplog.at_level(logging.WARNING, logger="callwatch"):
        setup(clock, sender)
        requests(1)
        clock.advance(7)
        clock.step(-4)  # T0 + 6: still inside [T0, T0 + 10)
        assert callwatch.flush() is None
        requests(1)
        clock.advance(4)
        snap = callwatch.flush()
    assert snap is not None and snap.start == T0 and snap.handlers["job"].requests == 2
    assert clock_warnings(caplog) == []


class SteppingClock:
    """The system's wall clock plus an offset the test sets (a fake of ``time.time``)."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset


def test_the_flush_thread_keeps_flushing_after_the_clock_steps_back(caplog: pytest.LogCaptureFixture) -> None:
    clock = SteppingClock(0.0)
    snaps: list[Snapshot] = []
    got = threading.Condition()

    def sink(snap: Snapshot) -> None:
        with got:
            snaps.append(snap)
            got.notify_all()

    def wait_for(n: int) -> None:
        with got:
            assert got.wait_for(lambda: len(snaps) >= n, timeout=10), f"{len(snaps)} flushes, wanted {n}"

    with caplog.at_level(logging.WARNING, logger="callwatch"):
        callwatch.configure({"graphite": {"host": "unused.invalid", "interval": 1}, "spikes": {"enabled": False}},
                            sender=RecordingSender(), clock=clock, on_snapshot=sink, strict=True)
        wait_for(2)
        before = snaps[-1].start
        clock.offset -= HOUR
        wait_for(len(snaps) + 3)  # within ~3 s: flushing did not wait for the hour to pass
        callwatch.shutdown()
    after = [s.start for s in snaps if s.start < before - HOUR / 2]  # the intervals after the step
    assert len(after) >= 2 and all(b - a == 1 for a, b in zip(after, after[1:]))
    assert before - HOUR - 2 <= after[0] <= before - HOUR + 2
    assert len(clock_warnings(caplog)) == 1
