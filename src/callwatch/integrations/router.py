"""Command routers: servers that dispatch by command id, like ``@app.route(2)``.

    from callwatch.integrations.router import instrument
    app.route = instrument(app.route, names={2: "login"})

    @app.route(2)              # registered as before, now also a callwatch handler
    def login(request): ...

The handler name is the one given for the id in ``names``, else the function's name.
Sync and async handlers both work (gevent greenlets keep their own request context).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, TypeVar

import callwatch

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["instrument"]


def instrument(route: Callable[..., Callable[[F], F]],
               names: Optional[Mapping[Any, str]] = None) -> Callable[..., Callable[[F], F]]:
    """Wrap a router's ``route(key, ...)`` decorator factory so that each function it
    registers becomes a callwatch handler, decided once, at registration."""
    names = dict(names or {})

    def instrumented(key: Any, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        register = route(key, *args, **kwargs)

        def deco(fn: F) -> F:
            wrapped = callwatch.handler(names.get(key) or fn.__name__)(fn)
            result = register(wrapped)
            if wrapped is fn:  # callwatch disabled: exactly as without it
                return result
            return wrapped if result is None else result

        return deco

    return instrumented
