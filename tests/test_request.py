"""The request lifecycle itself (callwatch._request): what the profiler is told, and when.

tests/test_matrix.py runs the same behaviour through every entry point; here the
profiler is a recording fake, to pin down the exact calls of the agreed interface
``begin(name, hint=None)`` / ``end(token, name, elapsed_ns, state)``.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterator

import pytest

import callwatch
from callwatch import _core, _request
from callwatch.integrations.wsgi import WSGIMiddleware
from callwatch.testing import FakeClock

from conftest import WRAPPERS


class RecordingProfiler:
    """Profiles every request; records the calls it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def begin(self, name: str | None, hint: str | None = None) -> Any:
        self.calls.append(("begin", name, hint))
        return "token"

    def end(self, token: Any, name: str, elapsed_ns: int, state: Any) -> None:
        self.calls.append(("end", token, name, elapsed_ns))

    def after_fork_in_child(self) -> None:
        pass


@pytest.fixture(autouse=True, params=WRAPPERS)
def wrapper_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with the C handler wrapper and with the generated one (in the
    pure-Python run of the suite, with that one only)."""
    monkeypatch.setattr(_core, "use_speedups", request.param == "C")
    return str(request.param)


def test_a_sync_handler_gets_the_c_wrapper_when_it_is_in_use(wrapper_kind: str) -> None:
    @callwatch.handler("h")
    def h(x: int) -> int:
        """Doc."""
        return x

    assert type(h).__name__ == ("Handler" if wrapper_kind == "C" else "function")
    assert (h.__name__, h.__doc__, list(inspect.signature(h).parameters), h(3)) == ("h", "Doc.", ["x"], 3)
    assert handlers()["h"][:2] == (1, 0)


def test_the_hosts_interrupt_in_callwatchs_bookkeeping_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A KeyboardInterrupt (or a signal handler's SystemExit) raised while the wrapper does
    its own work after the handler (here: in a dimension function) reaches the host, as
    it would without callwatch; an Exception there is callwatch's, and is dropped."""
    def interrupted(*args: Any) -> str:
        raise KeyboardInterrupt

    def broken(*args: Any) -> str:
        raise ValueError("a dimension function's bug")

    @callwatch.handler("h")
    def h(x: int) -> int:
        return x

    monkeypatch.setattr(_request, "dimension_functions", {"h": [("k", interrupted)]})
    with pytest.raises(KeyboardInterrupt):
        h(1)
    monkeypatch.setattr(_request, "dimension_functions", {"h": [("k", broken)]})
    assert h(2) == 2


@pytest.fixture
def prof(monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingProfiler]:
    p = RecordingProfiler()
    monkeypatch.setattr(_request, "profiler", p)
    with FakeClock() as clock:
        p.clock = clock  # type: ignore[attr-defined]
        yield p


def handlers() -> dict[Any, tuple[int, int, int]]:
    """{handler: (requests, errors, total ns)} since the last call."""
    return {h: (hs.requests, hs.errors, hs.ns) for h, hs in _core.collector.swap(0).handlers.items()}


def test_a_decorated_handler_is_named_at_the_start(prof: RecordingProfiler) -> None:
    @callwatch.handler("login")
    def login() -> None:
        prof.clock.advance(0.004)  # type: ignore[attr-defined]

    login()
    assert prof.calls == [("begin", "login", None), ("end", "token", "login", 4_000_000)]


def test_a_name_given_during_the_request_reaches_the_profiler(prof: RecordingProfiler) -> None:
    @callwatch.handler("dispatch")
    def dispatch() -> None:
        callwatch.name_request("join_table")

    with callwatch.request("block"):
        callwatch.name_request("nightly")
    dispatch()
    assert prof.calls == [("begin", "block", None), ("end", "token", "nightly", 0),
                          ("begin", "dispatch", None), ("end", "token", "join_table", 0)]
    assert handlers() == {"nightly": (1, 0, 0), "join_table": (1, 0, 0)}


def test_a_request_routed_later_gives_a_hint_then_its_final_name(prof: RecordingProfiler) -> None:
    clock = prof.clock  # type: ignore[attr-defined]

    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        callwatch.name_request("show_user")  # what a framework's router does
        clock.advance(0.002)
        start_response("200 OK", [])

        def body() -> Iterator[bytes]:
            for _ in range(3):
                clock.advance(0.001)
                yield b"x"
        return body()

    out = WSGIMiddleware(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/users/42"}, lambda *a: None)
    assert b"".join(out) == b"xxx"
    # The profile covers the app call (2 ms); the request its streamed body too (5 ms).
    assert prof.calls == [("begin", None, "GET_users"), ("end", "token", "show_user", 2_000_000)]
    assert handlers() == {"show_user": (1, 0, 5_000_000)}


def test_naming_and_dimension_functions_that_raise_do_not_break_the_request() -> None:
    def bad_name() -> str:
        raise ValueError("no route")

    def bad_dimension(*args: Any) -> str:
        raise KeyError("players")

    _request.dimension_functions = {"_unnamed": [("players", bad_dimension)]}
    try:
        with _request.RoutedRequest(hint=None, default=bad_name):
            pass
    finally:
        _request.dimension_functions = {}
    assert set(handlers()) == {"_unnamed", ("_unnamed", "players", "_error")}


def test_finish_counts_once_and_a_5xx_status_is_an_error() -> None:
    req = _request.RoutedRequest(hint=None, default=lambda: "upload", body_follows=True)
    with FakeClock() as clock:
        with req:
            clock.advance(0.001)
        assert handlers() == {}  # the body follows: not finished yet
        clock.advance(0.002)
        req.status = 502
        req.finish()
        clock.advance(0.004)
        req.finish()  # the last chunk and the server's close() may both end it
    assert handlers() == {"upload": (1, 1, 3_000_000)}
