"""Framework integrations in-process, through each framework's own test client."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Iterator

import pytest

import callwatch
from callwatch import _core
from callwatch.aggregate import Snapshot

WATCH = [{"target": "apps.shop:get_*", "group": "db"}, {"target": "apps.shop:aget_*", "group": "db"},
         {"target": "apps.shop:cache_*", "group": "cache"}]


@pytest.fixture
def watched() -> Iterator[None]:
    callwatch.configure({"watch": WATCH}, start_thread=False, strict=True)
    yield
    callwatch.shutdown()


def snap() -> Snapshot:
    return _core.collector.swap(0)


def summary(s: Snapshot) -> dict[Any, tuple[int, int, dict[str, int]]]:
    """{handler: (requests, errors, {function: calls})}"""
    out = {}
    for h, hs in s.handlers.items():
        calls = {s.entries[k].name: fs.calls for k, fs in hs.funcs.items() if fs.calls}
        out[h] = (hs.requests, hs.errors, calls)
    return out


def test_flask(watched: None) -> None:
    from apps.flask_app import app

    c = app.test_client()

    def get(path: str) -> tuple[int, bytes]:
        with c.get(path) as r:  # a server reads the body and closes the response; so do we
            return r.status_code, r.data

    assert get("/items/3") == (200, b'{"n":3}\n')
    assert get("/items/2")[0] == 200
    assert get("/prices/2") == (200, b'{"total":100}\n')
    assert get("/stream/4") == (200, b"0\n1\n2\n3\n")
    assert get("/boom")[0] == 500
    assert get("/no/such/page/123")[0] == 404
    assert get("/dim/7")[0] == 200
    assert summary(snap()) == {
        "list_items": (2, 0, {"get_item": 5, "cache_get": 2, "db": 5, "cache": 2}),
        "prices": (1, 0, {"get_price": 2, "db": 2}),
        "stream": (1, 0, {"get_item": 4, "db": 4}),  # calls made while the body streamed
        "boom": (1, 1, {"get_item": 1, "db": 1}),
        "_unmatched": (1, 0, {}),
        "dim": (1, 0, {"get_item": 7, "db": 7}),
        ("dim", "players", "7"): (1, 0, {"get_item": 7, "db": 7}),
    }


def test_flask_streamed_response_time_includes_the_body(watched: None) -> None:
    import time

    import flask

    from callwatch.integrations.flask import CallWatch

    app = flask.Flask("slowstream")
    CallWatch(app)

    @app.get("/slow")
    def slow() -> flask.Response:
        def body():  # type: ignore[no-untyped-def]
            for _ in range(3):
                time.sleep(0.02)
                yield b"x"
        return flask.Response(body())

    assert app.test_client().get("/slow").data == b"xxx"
    assert snap().handlers["slow"].ns >= 60_000_000


def test_starlette_asgi(watched: None) -> None:
    import httpx

    from apps.starlette_app import app

    async def main() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/items/3")).json() == {"n": 3}
            assert (await c.get("/stream/2")).text == "0\n1\n"
            assert (await c.get("/boom")).status_code == 500
            assert (await c.get("/nope/42")).status_code == 404

    asyncio.run(main())
    assert summary(snap()) == {
        "GET_items_n": (1, 0, {"aget_item": 3, "cache_get": 1, "db": 3, "cache": 1}),
        "GET_stream_n": (1, 0, {"aget_item": 2, "db": 2}),
        "GET_boom": (1, 1, {}),
        "_unmatched": (1, 0, {}),
    }


def test_asgi_attribution_with_many_requests_in_flight(watched: None) -> None:
    import httpx

    from apps.starlette_app import app

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rs = await asyncio.gather(*(c.get(f"/items/{1 + i % 4}") for i in range(200)),
                                      *(c.get("/prices/3") for _ in range(50)))
        assert all(r.status_code == 200 for r in rs)

    asyncio.run(main())
    got = summary(snap())
    assert got["GET_items_n"] == (200, 0, {"aget_item": 500, "cache_get": 200, "db": 500, "cache": 200})
    assert got["GET_prices_n"] == (50, 0, {"get_item": 150, "db": 150})


@pytest.fixture
def django_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "apps.djsite.settings")
    import django

    django.setup()
    yield


def test_django_sync_and_async(django_settings: None, watched: None) -> None:
    from django.test import AsyncClient, Client

    c = Client(raise_request_exception=False)
    assert c.get("/items/3/").json() == {"n": 3}
    assert c.get("/unnamed/").status_code == 200
    assert b"".join(c.get("/stream/3/").streaming_content) == b"0\n1\n2\n"
    assert c.get("/boom/").status_code == 500
    assert c.get("/e500/").status_code == 503
    assert c.get("/nowhere/").status_code == 404

    async def run_async() -> None:
        ac = AsyncClient()
        r = await ac.get("/aitems/4/")
        assert r.status_code == 200

    asyncio.run(run_async())
    got = summary(snap())
    assert got == {
        "item_list": (1, 0, {"get_item": 3, "cache_get": 1, "db": 3, "cache": 1}),
        "apps.djsite.views.unnamed": (1, 0, {"get_item": 1, "db": 1}),
        "stream": (1, 0, {"get_item": 3, "db": 3}),
        "boom": (1, 1, {}),
        "e500": (1, 1, {}),
        "_unmatched": (1, 0, {}),
        "aitem_list": (1, 0, {"aget_item": 4, "db": 4}),
    }


def test_command_router() -> None:
    from callwatch.integrations.router import instrument

    class App:
        def __init__(self) -> None:
            self.routes: dict[int, Any] = {}

        def route(self, cmd: int) -> Any:
            def register(fn: Any) -> Any:
                self.routes[cmd] = fn
                return fn
            return register

        def dispatch(self, cmd: int, *args: Any) -> Any:
            return self.routes[cmd](*args)

    app = App()
    app.route = instrument(app.route, names={2: "login"})  # type: ignore[method-assign]

    @callwatch.watch(name="get_user", group="db")
    def get_user(uid: int) -> int:
        return uid

    @app.route(2)
    def cmd_login(uid: int) -> int:
        return get_user(uid)

    @app.route(3)
    def join_table(uid: int, table: int) -> int:
        for p in range(table):
            get_user(p)
        return table

    assert app.dispatch(2, 5) == 5 and app.dispatch(3, 1, 7) == 7 and app.dispatch(3, 1, 2) == 2
    assert summary(snap()) == {"login": (1, 0, {"get_user": 1, "db": 1}),
                               "join_table": (2, 0, {"get_user": 9, "db": 9})}


def test_plain_wsgi_default_names_have_no_ids() -> None:
    from callwatch.integrations.wsgi import WSGIMiddleware

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    mw = WSGIMiddleware(app)
    for path in ("/users/42/edit", "/", "/12345/x", "/deadbeefcafe1234"):
        body = mw({"REQUEST_METHOD": "GET", "PATH_INFO": path}, lambda *a: None)
        assert list(body) == [b"ok"]
        body.close()  # type: ignore[attr-defined]
    assert {h: hs.requests for h, hs in snap().handlers.items()} == {"GET_users": 1, "GET_root": 1, "GET_id": 2}


def test_route_names() -> None:
    from callwatch.integrations._naming import route_name

    assert route_name("get", "/users/{id:int}/edit") == "GET_users_id_edit"
    assert route_name("POST", "/users/<int:uid>") == "POST_users_uid"
    assert route_name("GET", "/") == "GET_root"


def test_config_dimension_function_gets_the_framework_request() -> None:
    from callwatch.integrations.wsgi import WSGIMiddleware

    callwatch.configure({"handlers": {"dimensions": {"GET_a": {"depth": "cwsample.storage:path_depth"}}}},
                        start_thread=False, strict=True)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    mw = WSGIMiddleware(app)
    for path in ("/a", "/a/b/c", "/a/b/c"):
        list(mw({"REQUEST_METHOD": "GET", "PATH_INFO": path}, lambda *a: None))
    got = {h: hs.requests for h, hs in snap().handlers.items()}
    assert got == {"GET_a": 3, ("GET_a", "depth", "1"): 1, ("GET_a", "depth", "3"): 2}


def test_integrations_use_only_the_request_api() -> None:
    """No integration reaches into the core: besides the public ``callwatch`` names, only
    the public names of ``callwatch._request`` and its own ``_naming`` helpers."""
    import ast
    from pathlib import Path

    found = []
    for path in sorted((Path(callwatch.__file__).parent / "integrations").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                names = [a.name for a in node.names]
                if module in ("..", "callwatch"):  # from .. import _core
                    found += [f"{path.name}: from {module} import {n}" for n in names if n.startswith("_")]
                elif module in (".._request", "callwatch._request"):
                    found += [f"{path.name}: from {module} import {n}" for n in names if n.startswith("_")]
                elif module.startswith((".._", "callwatch._")):
                    found.append(f"{path.name}: from {module} import ...")
            elif isinstance(node, ast.Import):
                found += [f"{path.name}: import {a.name}" for a in node.names if a.name.startswith("callwatch._")]
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == "callwatch" and node.attr.startswith("_")):
                found.append(f"{path.name}: callwatch.{node.attr}")
    assert found == []


def test_a_middleware_name_function_names_the_request_and_may_fail() -> None:
    from callwatch.integrations.wsgi import WSGIMiddleware

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"ok"]

    def broken(environ: dict[str, Any]) -> str:
        raise KeyError("HTTP_X_ROUTE")

    for mw in (WSGIMiddleware(app, name=lambda environ: "by_header"), WSGIMiddleware(app, name=broken)):
        assert list(mw({"REQUEST_METHOD": "GET", "PATH_INFO": "/users/42"}, lambda *a: None)) == [b"ok"]
    # the broken one falls back to the default name
    assert {h: hs.requests for h, hs in snap().handlers.items()} == {"by_header": 1, "GET_users": 1}
