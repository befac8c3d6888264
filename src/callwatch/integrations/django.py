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
from typing import Any, Callable, Iterator

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

import callwatch

from .. import _core, _request
from ._naming import UNMATCHED

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
        st: list[Any] = [0] * _core.registry.width
        tok = _core._set(st)
        p = _request.profiler
        prof = p.begin(None) if p is not None else None
        t0 = _core._now()
        try:
            response = self.get_response(request)
        except Exception:
            _end_profile(p, prof, request, st, t0)
            _core._reset(tok)
            _finish(request, st, t0, 1)
            raise
        _end_profile(p, prof, request, st, t0)
        _core._reset(tok)
        return _after(request, response, st, t0)

    async def __acall__(self, request: Any) -> Any:
        st: list[Any] = [0] * _core.registry.width
        tok = _core._set(st)
        p = _request.profiler
        prof = p.begin(None) if p is not None else None
        t0 = _core._now()
        try:
            response = await self.get_response(request)
        except Exception:
            _end_profile(p, prof, request, st, t0)
            _core._reset(tok)
            _finish(request, st, t0, 1)
            raise
        _end_profile(p, prof, request, st, t0)
        _core._reset(tok)
        return _after(request, response, st, t0)


def _end_profile(p: Any, prof: Any, request: Any, st: list[Any], t0: int) -> None:
    if prof is not None:
        try:
            name = str(st[1]) if st[1] else handler_name(request)
        except Exception:
            name = "_unnamed"
        p.end(prof, name, _core._now() - t0, st)


def _finish(request: Any, st: list[Any], t0: int, err: int) -> None:
    t = _core._now() - t0
    try:
        name = str(st[1]) if st[1] else handler_name(request)
    except Exception:
        name = "_unnamed"
    if _request.dimension_functions:
        _request.config_dimensions(name, st, request)
    _core._record(name, t, err, st)


def _after(request: Any, response: Any, st: list[Any], t0: int) -> Any:
    err = 1 if getattr(response, "status_code", 200) >= 500 else 0
    if not getattr(response, "streaming", False):
        _finish(request, st, t0, err)
        return response
    # A streamed body: produce it inside the request, record when Django closes it.
    content = response.streaming_content
    if inspect.isasyncgen(content) or hasattr(content, "__aiter__"):
        response.streaming_content = _aiter_in(content, st)
    else:
        response.streaming_content = _iter_in(content, st)
    done = [False]

    def close() -> None:
        if not done[0]:
            done[0] = True
            _finish(request, st, t0, err)

    response._resource_closers.append(close)
    return response


def _iter_in(content: Any, st: list[Any]) -> Iterator[Any]:
    it = iter(content)
    while True:
        tok = _core._set(st)
        try:
            chunk = next(it)
        except StopIteration:
            return
        finally:
            _core._reset(tok)
        yield chunk


async def _aiter_in(content: Any, st: list[Any]) -> Any:
    it = content.__aiter__()
    while True:
        tok = _core._set(st)
        try:
            chunk = await it.__anext__()
        except StopAsyncIteration:
            return
        finally:
            _core._reset(tok)
        yield chunk
