from __future__ import annotations

import asyncio

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from apps import shop


def items(request: HttpRequest, n: int) -> JsonResponse:
    shop.cache_get("items")
    for i in range(n):
        shop.get_item(i)
    return JsonResponse({"n": n})


async def aitems(request: HttpRequest, n: int) -> JsonResponse:
    for i in range(n):
        await shop.aget_item(i)
        await asyncio.sleep(0)
    return JsonResponse({"n": n})


def unnamed(request: HttpRequest) -> HttpResponse:
    shop.get_item(1)
    return HttpResponse("ok")


def stream(request: HttpRequest, n: int) -> StreamingHttpResponse:
    def body():  # type: ignore[no-untyped-def]
        for i in range(n):
            shop.get_item(i)
            yield f"{i}\n"
    return StreamingHttpResponse(body())


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom")


def error500(request: HttpRequest) -> HttpResponse:
    return HttpResponse("no", status=503)
