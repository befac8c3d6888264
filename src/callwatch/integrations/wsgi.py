"""WSGI middleware: each request is one request of a handler, body included.

    from callwatch.integrations.wsgi import WSGIMiddleware
    app = WSGIMiddleware(app)                      # name: METHOD_first-path-segment
    app = WSGIMiddleware(app, name=lambda environ: ...)

The response time runs until the body's last chunk has been produced (or the server
closes the response, PEP 3333 ``close()``, if that comes first), so a streamed body is
included.  Watched calls made while the body is produced count for the
request.  Exceptions count as errors and propagate unchanged; 5xx responses count as
errors.  A framework hook can name the request once it has routed it
(``callwatch.name_request``), as the Flask integration does.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Iterator, Optional

from .._request import RoutedRequest
from ._naming import path_prefix_name, user_name

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

__all__ = ["WSGIMiddleware"]


class WSGIMiddleware:
    """Wrap a WSGI app: each request is one request of a handler, timed until its body's last
    chunk; the name is ``name(environ)`` when given, else method plus first path segment."""

    def __init__(self, app: WSGIApp, name: Optional[Callable[[Environ], str]] = None) -> None:
        self.app = app
        self.name = name

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        # Known at the start: the request's name unless the framework names it later.
        named = functools.partial(self.default_name, environ)
        req = RoutedRequest(hint=named, default=named, args=(environ,), body_follows=True)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            req.status = _status_code(status)
            return start_response(status, headers, exc_info)

        with req:
            body = self.app(environ, start)
        return _Body(body, req)

    def default_name(self, environ: Environ) -> str:
        """``name(environ)`` if given (and it does not raise), else method and first path
        segment."""
        named = user_name(self.name, environ)
        if named is not None:
            return named
        return path_prefix_name(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/"))


def _status_code(status: str) -> int:
    try:
        return int(status[:3])
    except ValueError:  # not a status line: not counted as a 5xx
        return 0


class _Body:
    """The app's response iterable, run inside the request; recorded on ``close()``."""

    def __init__(self, body: Iterable[bytes], req: RoutedRequest) -> None:
        self._body = body
        self._req = req
        self._error = False

    def __iter__(self) -> Iterator[bytes]:
        req = self._req
        try:
            yield from req.produce(self._body)
        except Exception:
            self._error = True
            req.finish(True)
            raise
        # Servers call close() next; some clients (test clients) only much later, so the
        # request ends with its last chunk.
        req.finish(self._error)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                self._req.call(close)
        except Exception:
            self._error = True
            raise
        finally:
            self._req.finish(self._error)
