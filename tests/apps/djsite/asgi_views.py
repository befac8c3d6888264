"""Async views for Django under a real ASGI server (tests/test_django_asgi.py).

Each view's watched calls (``apps.shop``, watched through ``apps.config``) are known, so
the totals per handler are known: concurrent awaits inside one request, a sync function
run in a thread with ``sync_to_async``, an async streamed body, an exception.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from apps import shop


async def gather(request: HttpRequest, n: int) -> JsonResponse:
    await asyncio.gather(*(shop.aget_item(i) for i in range(n)))
    shop.cache_get("gather")
    return JsonResponse({"n": n})


def _sync_work(n: int) -> int:
    return sum(shop.get_item(i)["id"] for i in range(n))


async def in_thread(request: HttpRequest, n: int) -> JsonResponse:
    return JsonResponse({"sum": await sync_to_async(_sync_work)(n)})


async def stream(request: HttpRequest, n: int) -> StreamingHttpResponse:
    async def body() -> AsyncIterator[bytes]:
        for i in range(n):
            await shop.aget_item(i)
            yield f"{i}\n".encode()

    return StreamingHttpResponse(body())


async def boom(request: HttpRequest) -> HttpResponse:
    await shop.aget_item(0)
    raise RuntimeError("boom")
