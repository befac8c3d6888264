"""The matrix's Django views, sync and async (handler names: the URL names, mx_...)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from apps import matrix


def work(request: HttpRequest, n: int) -> HttpResponse:
    matrix.work(n)
    return HttpResponse("ok")


def boom(request: HttpRequest) -> HttpResponse:
    matrix.boom()
    return HttpResponse("unreachable")


def e503(request: HttpRequest) -> HttpResponse:
    matrix.work(1)
    return HttpResponse("no", status=503)


def stream(request: HttpRequest, n: int) -> StreamingHttpResponse:
    return StreamingHttpResponse(matrix.chunks(n))


def renamed(request: HttpRequest) -> HttpResponse:
    matrix.renamed()
    return HttpResponse("ok")


async def awork(request: HttpRequest, n: int) -> HttpResponse:
    await matrix.awork(n)
    return HttpResponse("ok")


async def aboom(request: HttpRequest) -> HttpResponse:
    matrix.boom()
    return HttpResponse("unreachable")


async def ae503(request: HttpRequest) -> HttpResponse:
    matrix.work(1)
    return HttpResponse("no", status=503)


async def astream(request: HttpRequest, n: int) -> StreamingHttpResponse:
    return StreamingHttpResponse(matrix.achunks(n))


async def arenamed(request: HttpRequest) -> HttpResponse:
    matrix.renamed()
    return HttpResponse("ok")
