"""A Starlette app under the ASGI middleware: handler names from the route templates."""

from __future__ import annotations

import os

import asyncio

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

import callwatch
from callwatch.integrations.asgi import ASGIMiddleware

from apps import shop

if os.environ.get("CALLWATCH_CONFIG"):  # set by the server tests; in-process tests configure themselves
    callwatch.configure(strict=True)  # under gunicorn --preload this runs in the master, before fork


async def items(request: Request) -> JSONResponse:
    n = request.path_params["n"]
    for i in range(n):
        await shop.aget_item(i)
        await asyncio.sleep(0.01)  # keep many requests in flight, interleaved
    shop.cache_get("x")
    return JSONResponse({"n": n})


async def prices(request: Request) -> JSONResponse:
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
]))
