"""The same assertions over every way of making a request (issue 10 §1).

Each entry point is one row: a small adapter class that makes a request of one of the
actions below and says what the handler is called and what its caller sees.  A new
integration gets every test here by adding its row to ``ALL``.

Actions (the bodies are in tests/apps/matrix.py, shared by every row):

    work n    n watched calls, 1 ms each on the fake clock
    boom      1 watched call, then RuntimeError
    e503      1 watched call, then a 503 response (HTTP rows only)
    stream n  a streamed body of n chunks, 1 watched call and 1 ms each (HTTP rows only)
    renamed   callwatch.name_request("was_renamed"), then 1 watched call

The numbers are read back from what the exporter sends (RecordingSender), interval by
interval, with a FakeClock: response times are exact.  In-process clients only; the real
servers are in tests/test_servers.py and tests/test_maple.py.  The maple and haven rows
go through the framework's own dispatch of a request (tests/apps/matrix_maple.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import callwatch
from callwatch.testing import FakeClock, RecordingSender

from apps import matrix

INTERVAL = 10


@dataclass(frozen=True)
class Outcome:
    """What the caller of a request saw."""

    status: int | None = None  # the HTTP status, or maple's ret; None for a function call
    body: bytes = b""
    raised: type[BaseException] | None = None


class EntryPoint:
    """One row of the matrix."""

    id = ""
    #: Has a response status and a streamed body (the e503 and stream actions).
    http = False
    #: What a configured dimension function of ``work`` is given (see matrix.arg_kind).
    arg_kind = ""
    #: What the caller sees when the handler returns.
    ok = Outcome()
    #: (status, raised) when the handler raises.
    boom: tuple[int | None, type[BaseException] | None] = (None, RuntimeError)

    def setup(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Before each test (e.g. Django's settings)."""

    def name(self, action: str) -> str:
        """The handler name a request of ``action`` is reported under."""
        raise NotImplementedError

    def run(self, action: str, n: int = 0) -> Outcome:
        raise NotImplementedError


def _call(fn: Callable[[], Any]) -> Outcome:
    try:
        fn()
    except RuntimeError as e:
        return Outcome(raised=type(e))
    return Outcome()


async def _aboom() -> None:
    matrix.boom()


async def _arenamed() -> None:
    matrix.renamed()


class DecoratorSync(EntryPoint):
    id = "decorator-sync"
    arg_kind = "int"  # the handler's own argument

    def __init__(self) -> None:
        self.handlers = {"work": callwatch.handler("work")(matrix.work),
                         "boom": callwatch.handler("boom")(matrix.boom),
                         "renamed": callwatch.handler("rename_me")(matrix.renamed)}

    def name(self, action: str) -> str:
        return {"renamed": "rename_me"}.get(action, action)

    def run(self, action: str, n: int = 0) -> Outcome:
        fn = self.handlers[action]
        return _call(lambda: fn(n) if action == "work" else fn())


class DecoratorAsync(DecoratorSync):
    id = "decorator-async"

    def __init__(self) -> None:
        self.handlers = {"work": callwatch.handler("work")(matrix.awork),
                         "boom": callwatch.handler("boom")(_aboom),
                         "renamed": callwatch.handler("rename_me")(_arenamed)}

    def run(self, action: str, n: int = 0) -> Outcome:
        fn = self.handlers[action]
        return _call(lambda: asyncio.run(fn(n) if action == "work" else fn()))


class RequestSync(EntryPoint):
    id = "request-sync"
    arg_kind = "none"  # a block has no arguments

    def name(self, action: str) -> str:
        return action

    def run(self, action: str, n: int = 0) -> Outcome:
        body: Callable[[], None] = {"work": lambda: matrix.work(n), "boom": matrix.boom,
                                    "renamed": matrix.renamed}[action]

        def block() -> None:
            with callwatch.request(action):
                body()

        return _call(block)


class RequestAsync(RequestSync):
    id = "request-async"

    def run(self, action: str, n: int = 0) -> Outcome:
        body: Callable[[], Any] = {"work": lambda: matrix.awork(n), "boom": _aboom,
                                   "renamed": _arenamed}[action]

        async def block() -> None:
            async with callwatch.request(action):
                await body()

        return _call(lambda: asyncio.run(block()))


class Router(EntryPoint):
    id = "router"
    arg_kind = "int"
    COMMANDS = {"work": 1, "boom": 2, "renamed": 3}

    def __init__(self) -> None:
        from callwatch.integrations.router import instrument

        self.routes: dict[int, Callable[..., Any]] = {}

        def route(cmd: int) -> Callable[[Any], Any]:
            def register(fn: Any) -> Any:
                self.routes[cmd] = fn
                return fn
            return register

        route = instrument(route, names={1: "cmd_work", 3: "cmd_rename_me"})
        route(1)(matrix.work)
        route(2)(matrix.boom)  # no name given: the function's
        route(3)(matrix.renamed)

    def name(self, action: str) -> str:
        return {"work": "cmd_work", "boom": "boom", "renamed": "cmd_rename_me"}[action]

    def run(self, action: str, n: int = 0) -> Outcome:
        fn = self.routes[self.COMMANDS[action]]
        return _call(lambda: fn(n) if action == "work" else fn())


class Http(EntryPoint):
    """An HTTP row: ``get(path)`` through the framework's in-process client."""

    http = True
    ok = Outcome(200, b"ok")
    PATHS = {"work": "/work/{n}", "boom": "/boom", "e503": "/e503", "stream": "/stream/{n}",
             "renamed": "/renamed"}
    NAMES: dict[str, str] = {}

    def name(self, action: str) -> str:
        return self.NAMES[action]

    def run(self, action: str, n: int = 0) -> Outcome:
        path = self.PATHS[action].format(n=n)
        try:
            status, body = self.get(path)
        except RuntimeError as e:
            return Outcome(raised=type(e))
        return Outcome(status, body)

    def get(self, path: str) -> tuple[int, bytes]:
        raise NotImplementedError


class Wsgi(Http):
    id = "wsgi"
    arg_kind = "environ"
    boom = (None, RuntimeError)  # no framework turns it into a 500 page
    NAMES = {"work": "GET_work", "boom": "GET_boom", "e503": "GET_e503", "stream": "GET_stream",
             "renamed": "GET_renamed"}

    def get(self, path: str) -> tuple[int, bytes]:
        from werkzeug.test import Client

        from apps.matrix_wsgi import application

        r = Client(application).get(path)
        try:  # a server reads the body, then closes the response
            return r.status_code, r.get_data()
        finally:
            r.close()


class Flask(Http):
    id = "flask"
    arg_kind = "environ"
    boom = (500, None)
    NAMES = {"work": "work", "boom": "boom", "e503": "e503", "stream": "stream", "renamed": "renamed"}

    def get(self, path: str) -> tuple[int, bytes]:
        from apps.matrix_flask import app

        with app.test_client().get(path) as r:
            return r.status_code, r.get_data()


class Asgi(Http):
    id = "asgi-starlette"
    arg_kind = "scope"
    boom = (500, None)
    NAMES = {"work": "GET_work_n", "boom": "GET_boom", "e503": "GET_e503", "stream": "GET_stream_n",
             "renamed": "GET_renamed"}

    def get(self, path: str) -> tuple[int, bytes]:
        import httpx

        from apps.matrix_starlette import app

        async def main() -> tuple[int, bytes]:
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                r = await c.get(path)
                return r.status_code, r.content

        return asyncio.run(main())


class DjangoSync(Http):
    id = "django-sync"
    arg_kind = "django"
    boom = (500, None)
    PREFIX = "/mx"
    NAMES = {"work": "mx_work", "boom": "mx_boom", "e503": "mx_e503", "stream": "mx_stream",
             "renamed": "mx_renamed"}

    def setup(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "apps.djsite.settings")
        import django

        django.setup()

    def get(self, path: str) -> tuple[int, bytes]:
        from django.test import Client

        r = Client(raise_request_exception=False).get(self.PREFIX + path + "/")
        body = b"".join(r.streaming_content) if r.streaming else r.content
        r.close()
        return r.status_code, body


class DjangoAsync(DjangoSync):
    id = "django-async"
    PREFIX = "/mx/a"
    NAMES = {"work": "mx_awork", "boom": "mx_aboom", "e503": "mx_ae503", "stream": "mx_astream",
             "renamed": "mx_arenamed"}

    def get(self, path: str) -> tuple[int, bytes]:
        from django.test import AsyncClient

        async def main() -> tuple[int, bytes]:
            r = await AsyncClient(raise_request_exception=False).get(self.PREFIX + path + "/")
            body = b"".join([c async for c in r.streaming_content]) if r.streaming else r.content
            return r.status_code, body

        return asyncio.run(main())


class Maple(EntryPoint):
    """A request through a maple worker's dispatch; the caller is the client, answered a
    box: a view that raises is answered ``RET_INTERNAL``, nothing propagates."""

    id = "maple"
    arg_kind = "Request"  # maple's request object
    ok = Outcome(0, b"ok")
    boom = (-10001, None)  # maple's RET_INTERNAL
    NAMES = {"work": "work", "boom": "mx_boom", "renamed": "renamed"}  # endpoints; mx.boom a blueprint's

    @cached_property
    def server(self) -> Any:
        from apps.matrix_maple import MapleWorker

        return MapleWorker()

    def name(self, action: str) -> str:
        return self.NAMES[action]

    def run(self, action: str, n: int = 0) -> Outcome:
        from apps.matrix_maple import COMMANDS

        box = self.server.request(COMMANDS[action], str(n).encode())
        return Outcome(box.ret, box.body)


class Haven(Maple):
    """The same through haven's ``GHaven`` (its RET_INTERNAL is maple's)."""

    id = "haven"

    @cached_property
    def server(self) -> Any:
        from apps.matrix_maple import HavenServer

        return HavenServer()


ALL: list[EntryPoint] = [DecoratorSync(), DecoratorAsync(), RequestSync(), RequestAsync(), Router(),
                         Wsgi(), Flask(), Asgi(), DjangoSync(), DjangoAsync(), Maple(), Haven()]
HTTP = [e for e in ALL if e.http]


@pytest.fixture(params=ALL, ids=lambda e: e.id)
def ep(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> EntryPoint:
    e: EntryPoint = request.param
    e.setup(monkeypatch)
    return e


@pytest.fixture(params=HTTP, ids=lambda e: e.id)
def http_ep(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> EntryPoint:
    e: EntryPoint = request.param
    e.setup(monkeypatch)
    return e


class Harness:
    """Configure with a recording sender and a fake clock; read back one interval at a time."""

    def __init__(self) -> None:
        self.clock = FakeClock(1_700_000_000)
        self.sender = RecordingSender()
        self._read = 0

    def configure(self, **sections: Any) -> None:
        config = {"graphite": {"interval": INTERVAL}, "watch": [{"target": "apps.shop:get_*"}], **sections}
        callwatch.configure(config, sender=self.sender, clock=self.clock, start_thread=False, strict=True)

    def interval(self) -> dict[str, float]:
        """End the interval and return what was sent for it: {path after 'handler.': value}."""
        self.clock.advance(INTERVAL)
        callwatch.flush()
        lines = b"".join(self.sender.payloads[self._read:]).decode().splitlines()
        self._read = len(self.sender.payloads)
        out = {}
        for line in lines:
            path, value, _ = line.split(" ")
            _, found, below = path.partition(".handler.")
            if found:
                out[below] = float(value)
        return out


@pytest.fixture
def h(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = Harness()
    monkeypatch.setattr(matrix, "tick", lambda: harness.clock.advance(0.001))
    with harness.clock:
        yield harness
        callwatch.shutdown()


def requests(m: dict[str, float]) -> dict[str, float]:
    """{handler: requests} of an interval (handlers with none left out)."""
    return {k.split(".")[0]: v for k, v in m.items()
            if k.count(".") == 1 and k.endswith(".requests") and v}


def pick(m: dict[str, float], expected: dict[str, float]) -> dict[str, float | None]:
    return {k: m.get(k) for k in expected}


def test_counts_calls_per_request_and_response_time(h: Harness, ep: EntryPoint) -> None:
    h.configure()
    assert ep.run("work", 3) == ep.ok
    assert ep.run("work", 1) == ep.ok
    m = h.interval()
    w = ep.name("work")
    assert requests(m) == {w: 2}
    expected = {f"{w}.errors": 0, f"{w}.watch.get_item.calls": 4,
                f"{w}.watch.get_item.calls_per_request.mean": 2.0,
                f"{w}.watch.get_item.calls_per_request.max": 3,
                f"{w}.response_ms.mean": 2.0, f"{w}.response_ms.max": 3.0}
    assert pick(m, expected) == expected


def test_a_raised_exception_is_an_error_and_propagates(h: Harness, ep: EntryPoint) -> None:
    h.configure()
    out = ep.run("boom")
    assert (out.status, out.raised) == ep.boom
    m = h.interval()
    b = ep.name("boom")
    assert requests(m) == {b: 1}
    expected = {f"{b}.errors": 1, f"{b}.watch.get_item.calls": 1, f"{b}.response_ms.mean": 1.0}
    assert pick(m, expected) == expected


def test_a_5xx_returned_is_an_error(h: Harness, http_ep: EntryPoint) -> None:
    h.configure()
    assert http_ep.run("e503") == Outcome(503, b"no")
    m = h.interval()
    e = http_ep.name("e503")
    assert requests(m) == {e: 1}
    expected = {f"{e}.errors": 1, f"{e}.watch.get_item.calls": 1}
    assert pick(m, expected) == expected


def test_a_streamed_body_counts_for_the_request(h: Harness, http_ep: EntryPoint) -> None:
    h.configure()
    assert http_ep.run("stream", 3) == Outcome(200, b"0\n1\n2\n")
    m = h.interval()
    s = http_ep.name("stream")
    assert requests(m) == {s: 1}
    # the calls made while the body streamed, and the time it took (3 x 1 ms)
    expected = {f"{s}.errors": 0, f"{s}.watch.get_item.calls": 3, f"{s}.response_ms.mean": 3.0}
    assert pick(m, expected) == expected


def test_configured_dimensions_apply(h: Harness, ep: EntryPoint) -> None:
    w = ep.name("work")
    h.configure(handlers={"dimensions": {w: {"arg": "apps.matrix:arg_kind"}}})
    ep.run("work", 2)
    m = h.interval()
    by = f"{w}.by.arg.{ep.arg_kind}"
    expected = {f"{w}.requests": 1, f"{by}.requests": 1, f"{by}.watch.get_item.calls": 2}
    assert pick(m, expected) == expected


def test_name_request_renames_the_request(h: Harness, ep: EntryPoint) -> None:
    h.configure()
    ep.run("renamed")
    m = h.interval()
    assert requests(m) == {"was_renamed": 1}  # nothing under ep.name("renamed")
    assert m["was_renamed.watch.get_item.calls"] == 1


def profiled(m: dict[str, float], handler: str) -> float:
    return m.get(f"{handler}.profile.requests", 0)


def test_profiling_at_rate_1_profiles_every_request(h: Harness, ep: EntryPoint) -> None:
    h.configure(profile={"rate": 1.0, "min_interval": 0, "budget": 1.0})
    for _ in range(3):
        ep.run("work", 1)
    m = h.interval()
    assert profiled(m, ep.name("work")) == 3


def test_min_interval_profiles_a_rare_handler_once_then_waits(h: Harness, ep: EntryPoint) -> None:
    # The budget off: its credit (budget x wall time) would make this depend on how long a
    # profiled request takes on a loaded machine; the budget has tests of its own.
    h.configure(profile={"rate": 0.0, "min_interval": 1, "budget": 1.0})
    w = ep.name("work")
    for _ in range(3):
        ep.run("work", 1)
    assert profiled(h.interval(), w) == 1  # never profiled: its first request is
    ep.run("work", 1)
    ep.run("work", 1)
    assert profiled(h.interval(), w) == 0  # profiled less than min_interval ago
    time.sleep(1.05)  # min_interval passes; the profiler sees it at the next flush
    h.interval()
    ep.run("work", 1)
    ep.run("work", 1)
    assert profiled(h.interval(), w) == 1


def test_the_trigger_file_profiles_a_handler_on_demand(h: Harness, ep: EntryPoint, tmp_path: Path) -> None:
    trigger = tmp_path / "profile-now"
    h.configure(profile={"rate": 0.0, "min_interval": 0, "budget": 1.0, "trigger_file": str(trigger)})
    w = ep.name("work")
    ep.run("work", 1)
    assert profiled(h.interval(), w) == 0
    trigger.write_text(f"{w} 60\n")
    h.interval()  # the flush reads the trigger file
    assert not trigger.exists()
    ep.run("work", 1)
    ep.run("work", 1)
    assert profiled(h.interval(), w) == 2
