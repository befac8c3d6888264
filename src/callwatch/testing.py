"""Helpers for testing code that uses callwatch (and for callwatch's own tests).

``RecordingSender`` keeps the exact bytes the exporter would have sent to carbon;
``FakeClock`` controls both the wall clock (interval boundaries) and the duration clock
(response and call times), so tests can assert exact numbers::

    clock = FakeClock(1_700_000_000)
    sender = RecordingSender()
    with clock:
        callwatch.configure(cfg, sender=sender, clock=clock, start_thread=False)
        with callwatch.request("login"):
            clock.advance(0.005)
        clock.advance(10)
        callwatch.flush()
    assert b"handler.login.requests 1 1700000000\\n" in sender.data
"""

from __future__ import annotations

import threading
from types import TracebackType

from . import _core
from .export import GraphyteSender

__all__ = ["FakeClock", "RecordingSender"]


class RecordingSender(GraphyteSender):
    """A sender that records payloads instead of sending them.

    Set ``fail = True`` (or an exception instance) to make sends fail, as when carbon is
    unreachable.
    """

    def __init__(self, *, protocol: str = "tcp") -> None:
        super().__init__("recording.invalid", 2003, protocol=protocol)
        self.payloads: list[bytes] = []
        self.fail: bool | BaseException = False
        self._lock = threading.Lock()

    def send_message(self, message: bytes) -> None:
        """Keep ``message`` in ``payloads``, or raise when ``fail`` is set."""
        if self.fail:
            raise self.fail if isinstance(self.fail, BaseException) else ConnectionRefusedError("fail = True")
        with self._lock:
            self.payloads.append(message)

    @property
    def data(self) -> bytes:
        """Every payload kept, joined: the bytes carbon would have read."""
        return b"".join(self.payloads)

    @property
    def lines(self) -> list[str]:
        """The lines sent, ``metric value timestamp``."""
        return self.data.decode().splitlines()

    def values(self) -> dict[tuple[str, int], float]:
        """{(metric, timestamp): value} of everything sent (last value wins, as in carbon)."""
        out: dict[tuple[str, int], float] = {}
        for line in self.lines:
            name, value, ts = line.split(" ")
            out[(name, int(ts))] = float(value)
        return out


class FakeClock:
    """A wall clock and a duration clock that only move when told to.

    Use as a context manager to make callwatch's wrappers read durations from it.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._wall = float(start)
        self._ns = 1_000_000_000  # > 0, like a real monotonic clock
        self._saved: list[object] = []

    def time(self) -> float:
        """The wall clock, seconds (as ``time.time()``)."""
        return self._wall

    def perf_counter_ns(self) -> int:
        """The duration clock, ns (as ``time.perf_counter_ns()``)."""
        return self._ns

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move."""
        self._wall += seconds
        self._ns += round(seconds * 1e9)

    def step(self, seconds: float) -> None:
        """The wall clock is set ``seconds`` forward (negative: back), as NTP or an operator
        does; no time passes, so durations are not affected."""
        self._wall += seconds

    def __enter__(self) -> FakeClock:
        self._saved.append(_core._now)
        _core.set_clock(self.perf_counter_ns)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        _core.set_clock(self._saved.pop())  # type: ignore[arg-type]
