"""ASGI middleware (HTTP): each request is one request of a handler.

    from callwatch.integrations.asgi import ASGIMiddleware
    app = ASGIMiddleware(app)      # Starlette / FastAPI: name from the route template

The handler name is, in order: a name set during the request
(``callwatch.name_request``), ``name(scope)`` if given, the matched route's template
(``GET /users/{id}`` -> ``GET_users_id``, which Starlette and FastAPI put in the scope),
``_unmatched`` for a 404 without a route, else method plus the first path segment.
The response time runs until the app returns, after the last body chunk is sent, so a
streamed response is included.  Exceptions count as errors and propagate; 5xx responses
count as errors.  Websocket connections and lifespan events pass through; when the
server's lifespan shutdown completes, callwatch does its final flush and shuts down
(uvicorn ends by re-raising SIGTERM, so ``atexit`` would never run).
"""

from __future__ import annotations

import functools
from typing import Any, Awaitable, Callable, MutableMapping, Optional

import callwatch

from .._request import RoutedRequest
from ._naming import UNMATCHED, path_prefix_name, route_name, user_name

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["ASGIMiddleware"]


class ASGIMiddleware:
    """Wrap an ASGI app: each HTTP request is one request of a handler, named as the module
    says (``name(scope)`` when given); lifespan shutdown runs callwatch's final flush."""

    def __init__(self, app: ASGIApp, name: Optional[Callable[[Scope], str]] = None) -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        req = RoutedRequest(hint=functools.partial(_path_name, scope),
                      default=lambda: self.default_name(scope, req.status), args=(scope,))

        async def send_wrapper(message: Message) -> None:
            if message.get("type") == "http.response.start":
                req.status = int(message.get("status", 0))
            await send(message)

        with req:
            await self.app(scope, receive, send_wrapper)

    @staticmethod
    def _lifespan_send(send: Send) -> Send:
        # Servers such as uvicorn end the process by re-raising SIGTERM after the lifespan
        # shutdown, so atexit handlers never run: the final flush happens here instead.
        async def lifespan_send(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                callwatch.shutdown()
            await send(message)

        return lifespan_send

    def default_name(self, scope: Scope, status: int) -> str:
        """``name(scope)`` if given, the matched route's template, ``_unmatched`` for a 404
        without a route, else method and first path segment."""
        named = user_name(self.name, scope)
        if named is not None:
            return named
        route = scope.get("route")
        template = getattr(route, "path", None) or getattr(route, "path_format", None)
        if isinstance(template, str):
            return route_name(str(scope.get("method", "GET")), template)
        if status == 404:
            return UNMATCHED
        return _path_name(scope)


def _path_name(scope: Scope) -> str:
    return path_prefix_name(str(scope.get("method", "GET")), str(scope.get("path", "/")))
