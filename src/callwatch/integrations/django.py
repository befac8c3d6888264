"""Django: a middleware, sync and async.

    # settings.py
    MIDDLEWARE = ["callwatch.integrations.django.CallWatchMiddleware", ...]   # first
    CALLWATCH = "callwatch.yaml"          # or an inline dict; omit to configure yourself

Each request is one request of the handler named by its URL pattern's name
(``path("users/<int:id>/", views.show, name="user_show")`` -> ``user_show``), else the
view's dotted path (``myapp.views.show``), ``_unmatched`` when no pattern matched.
Streaming responses are timed until Django closes them.  Exceptions count as errors and
propagate; 5xx responses count as errors.
"""

from __future__ import annotations

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
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)
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
