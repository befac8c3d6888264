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

from typing import Any, Awaitable, Callable, MutableMapping, Optional

from .. import _core, _request, _runtime
from ._naming import UNMATCHED, path_prefix_name, route_name

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["ASGIMiddleware"]


class ASGIMiddleware:
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
        st: list[Any] = [0] * _core.registry.width
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = int(message.get("status", 0))
            await send(message)

        tok = _core._set(st)
        err = 0
        p = _request.profiler
        prof = p.begin(None) if p is not None else None
        t0 = _core._now()
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            err = 1
            raise
        finally:
            t = _core._now() - t0
            if status >= 500:
                err = 1
            try:
                name = self.handler_name(scope, st, status)
            except Exception:
                name = "_unnamed"
            if prof is not None:
                p.end(prof, name, t, st)
            _core._reset(tok)
            if _request.dimension_functions:
                _request.config_dimensions(name, st, scope)
            _core._record(name, t, err, st)

    @staticmethod
    def _lifespan_send(send: Send) -> Send:
        # Servers such as uvicorn end the process by re-raising SIGTERM after the lifespan
        # shutdown, so atexit handlers never run: the final flush happens here instead.
        async def lifespan_send(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                _runtime.shutdown()
            await send(message)

        return lifespan_send

    def handler_name(self, scope: Scope, state: list[Any], status: int) -> str:
        if state[1]:
            return str(state[1])
        if self.name is not None:
            try:
                return self.name(scope)
            except Exception:
                pass
        method = str(scope.get("method", "GET"))
        route = scope.get("route")
        template = getattr(route, "path", None) or getattr(route, "path_format", None)
        if isinstance(template, str):
            return route_name(method, template)
        if status == 404:
            return UNMATCHED
        return path_prefix_name(method, str(scope.get("path", "/")))
