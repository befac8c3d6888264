"""The demo's cache layer: an in-process key-value store with the shape of a redis client."""

from __future__ import annotations

import time
from typing import Any


class Cache:
    def __init__(self) -> None:
        self._data: dict[str, tuple[float, Any]] = {}

    def get(self, key: str) -> Any:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires and expires < time.monotonic():
            del self._data[key]
            return None
        return value

    def set(self, key: str, value: Any, ttl: float = 0.0) -> None:
        self._data[key] = (time.monotonic() + ttl if ttl else 0.0, value)

    def delete(self, key: str) -> None:
        self._data.pop(key, None)
