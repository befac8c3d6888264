"""What every entry point of tests/test_matrix.py runs: the same bodies, so the same numbers.

Each watched call (``shop.get_item``, watched through the matrix's ``watch:`` config) is
followed by one millisecond on the test's FakeClock, so a request's response time is
exactly its number of calls in milliseconds, streamed bodies included.
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Callable, Iterator

import callwatch

from apps import shop

#: Set by the test: moves the fake clock on by one millisecond.
tick: Callable[[], None] = lambda: None

#: The name a request gives itself in ``renamed``.
RENAMED = "was_renamed"


def work(n: int) -> None:
    for i in range(n):
        shop.get_item(i)
        tick()


async def awork(n: int) -> None:
    for i in range(n):
        shop.get_item(i)
        tick()
        await asyncio.sleep(0)  # other tasks may run in between


def boom() -> None:
    shop.get_item(0)
    tick()
    raise RuntimeError("boom")


def renamed() -> None:
    callwatch.name_request(RENAMED)
    work(1)


def chunks(n: int) -> Iterator[bytes]:
    for i in range(n):
        shop.get_item(i)
        tick()
        yield f"{i}\n".encode()


async def achunks(n: int) -> AsyncIterator[bytes]:
    for i in range(n):
        shop.get_item(i)
        tick()
        await asyncio.sleep(0)
        yield f"{i}\n".encode()


def arg_kind(*args: Any, **kwargs: Any) -> str:
    """A configured dimension function: which object it was given."""
    if not args and not kwargs:
        return "none"
    a = args[0] if args else next(iter(kwargs.values()))
    if isinstance(a, int):
        return "int"
    if isinstance(a, dict) and "PATH_INFO" in a:
        return "environ"
    if isinstance(a, dict) and a.get("type") == "http":
        return "scope"
    if hasattr(a, "META") and hasattr(a, "resolver_match"):
        return "django"
    return type(a).__name__
