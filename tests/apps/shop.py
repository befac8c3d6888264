"""The 'storage' the test apps call; watched through YAML targets (apps.shop:get_*...)."""

from __future__ import annotations

import asyncio
import time


def get_item(i: int) -> dict[str, int]:
    return {"id": i}


def get_price(i: int) -> int:
    time.sleep(0.001)  # lets threads and greenlets interleave between watched calls
    return i * 100


def cache_get(key: str) -> str | None:
    return None


async def aget_item(i: int) -> dict[str, int]:
    await asyncio.sleep(0)
    return {"id": i}
