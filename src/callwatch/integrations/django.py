"""Django: a middleware, sync and async.

    # settings.py
    MIDDLEWARE = ["callwatch.integrations.django.CallWatchMiddleware", ...]   # first
    CALLWATCH = "callwatch.yaml"          # or an inline dict; omit to configure yourself

Each request is one request of the handler named by its URL pattern's name
(``path("users/<int:id>/", views.show, name="user_show")`` -> ``user_show``), else the
view's dotted path (``myapp.views.show``), ``_unmatched`` when no pattern matched.
Streaming responses are timed until Django closes them.  Exceptions count as errors and
propagate; 5xx responses count as errors.

Under ASGI, Django's handler refuses the server's lifespan events, and uvicorn ends by
re-raising SIGTERM, so ``atexit`` never runs and the last partial interval would be lost at
every stop.  When the middleware is loaded by the ASGI handler, Django's ``ASGIHandler``
answers lifespan events instead: startup completes, shutdown (after the last request)
does callwatch's final flush.  Stacks that route lifespan elsewhere (a Starlette or
Channels app in front of Django) must call ``callwatch.shutdown()`` on their own shutdown.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

import callwatch

from .._request import RoutedRequest
from ._naming import UNMATCHED, path_prefix_name

__all__ = ["CallWatchMiddleware"]

_configured = False


def _configure_from_settings() -> None:
    global _configured
    if _configured:
        return
    _configured = True
    from django.conf import settings

    source = getattr(settings, "CALLWATCH", None)
    if source is not None:
        callwatch.configure(source)


def handler_name(request: Any) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNMATCHED
    if match.url_name:
        return str(match.url_name)
    return str(getattr(match, "_func_path", None) or match.view_name or UNMATCHED)


class CallWatchMiddleware:
    """The Django middleware (sync and async): list it first in ``MIDDLEWARE``; settings'
    ``CALLWATCH`` (a YAML path or a dict), if set, is passed to :func:`callwatch.configure`."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
            _answer_lifespan()
        _configure_from_settings()

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self.__acall__(request)
        req = _begin(request)
        with req:
            response = self.get_response(request)
        return _after(req, response)

    async def __acall__(self, request: Any) -> Any:
        req = _begin(request)
        with req:
            response = await self.get_response(request)
        return _after(req, response)


def _begin(request: Any) -> RoutedRequest:
    # Django routes inside get_response: the URL name is known at the end only.
    return RoutedRequest(hint=lambda: path_prefix_name(str(request.method), str(request.path)),
                   default=lambda: handler_name(request), args=(request,), body_follows=True)


def _after(req: RoutedRequest, response: Any) -> Any:
    req.status = int(getattr(response, "status_code", 200))
    if not getattr(response, "streaming", False):
        req.finish()
        return response
    # A streamed body: produce it inside the request, record when Django closes it.
    content = response.streaming_content
    if inspect.isasyncgen(content) or hasattr(content, "__aiter__"):
        response.streaming_content = req.aproduce(content)
    else:
        response.streaming_content = req.produce(content)
    response._resource_closers.append(req.finish)
    return response


def _answer_lifespan() -> None:
    """Make Django's ASGI handler answer lifespan events (once per process)."""
    from django.core.handlers.asgi import ASGIHandler

    django_call = ASGIHandler.__call__
    if getattr(django_call, "_callwatch_lifespan", False):
        return

    @functools.wraps(django_call)
    async def call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        else:
            await django_call(self, scope, receive, send)

    call._callwatch_lifespan = True  # type: ignore[attr-defined]
    ASGIHandler.__call__ = call


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            # the server has finished its last request: the partial interval goes out now
            callwatch.shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
