"""A Starlette app under the ASGI middleware: handler names from the route templates."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

import callwatch
from callwatch.integrations.asgi import ASGIMiddleware

from apps import shop

if os.environ.get("CALLWATCH_CONFIG"):  # set by the server tests; in-process tests configure themselves
    callwatch.configure(strict=True)  # under gunicorn --preload this runs in the master, before fork


# Requests in flight at once, counted inside the middleware (tests/test_servers.py reads the
# most seen through /in_flight).  With APPS_IN_FLIGHT_GATE=N, each request waits (at most
# GATE_TIMEOUT s) until N are in flight, so that the count shows whether the server
# really holds N at once, not how fast the client was.
_GATE = int(os.environ.get("APPS_IN_FLIGHT_GATE", "0"))
GATE_TIMEOUT = 10.0
_gate_open = asyncio.Event()
in_flight = 0
in_flight_max = 0


@contextlib.asynccontextmanager
async def counted() -> AsyncIterator[None]:
    global in_flight, in_flight_max
    in_flight += 1
    in_flight_max = max(in_flight_max, in_flight)
    try:
        if _GATE:
            if in_flight >= _GATE:
                _gate_open.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(_gate_open.wait(), GATE_TIMEOUT)
        yield
    finally:
        in_flight -= 1


async def in_flight_stats(request: Request) -> JSONResponse:
    return JSONResponse({"max": in_flight_max})


async def items(request: Request) -> JSONResponse:
    async with counted():
        return await _items(request)


async def _items(request: Request) -> JSONResponse:
    n = request.path_params["n"]
    for i in range(n):
        await shop.aget_item(i)
        await asyncio.sleep(0.01)  # keep many requests in flight, interleaved
    shop.cache_get("x")
    return JSONResponse({"n": n})


async def prices(request: Request) -> JSONResponse:
    async with counted():
        return await _prices(request)


async def _prices(request: Request) -> JSONResponse:
    n = request.path_params["n"]
    total = 0
    for i in range(n):
        total += shop.get_item(i)["id"]
        await asyncio.sleep(0.005)
    return JSONResponse({"total": total})


async def stream(request: Request) -> StreamingResponse:
    n = request.path_params["n"]

    async def body():  # type: ignore[no-untyped-def]
        for i in range(n):
            await shop.aget_item(i)
            yield f"{i}\n".encode()

    return StreamingResponse(body())


async def boom(request: Request) -> JSONResponse:
    raise RuntimeError("boom")


app = ASGIMiddleware(Starlette(routes=[
    Route("/items/{n:int}", items),
    Route("/prices/{n:int}", prices),
    Route("/stream/{n:int}", stream),
    Route("/boom", boom),
    Route("/in_flight", in_flight_stats),
]))
