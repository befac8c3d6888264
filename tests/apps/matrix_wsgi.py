"""The matrix's framework-less WSGI app (default names: method and first path segment)."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from callwatch.integrations.wsgi import WSGIMiddleware

from apps import matrix


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    action, _, arg = environ["PATH_INFO"].strip("/").partition("/")
    if action == "work":
        matrix.work(int(arg))
    elif action == "boom":
        matrix.boom()  # raises: a bare WSGI app has no error page, the exception propagates
    elif action == "e503":
        matrix.work(1)
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
        return [b"no"]
    elif action == "stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return matrix.chunks(int(arg))
    elif action == "renamed":
        matrix.renamed()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


application = WSGIMiddleware(app)
