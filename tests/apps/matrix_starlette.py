"""The matrix's Starlette app under the ASGI middleware (names from route templates)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from callwatch.integrations.asgi import ASGIMiddleware

from apps import matrix


async def work(request: Request) -> PlainTextResponse:
    await matrix.awork(request.path_params["n"])
    return PlainTextResponse("ok")


async def boom(request: Request) -> PlainTextResponse:
    matrix.boom()
    return PlainTextResponse("unreachable")


async def e503(request: Request) -> PlainTextResponse:
    matrix.work(1)
    return PlainTextResponse("no", status_code=503)


async def stream(request: Request) -> StreamingResponse:
    return StreamingResponse(matrix.achunks(request.path_params["n"]))


async def renamed(request: Request) -> PlainTextResponse:
    matrix.renamed()
    return PlainTextResponse("ok")


app = ASGIMiddleware(Starlette(routes=[
    Route("/work/{n:int}", work),
    Route("/boom", boom),
    Route("/e503", e503),
    Route("/stream/{n:int}", stream),
    Route("/renamed", renamed),
]))
