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

from typing import Any, Callable, Iterable, Iterator, Optional

from .. import _core, _request
from ._naming import path_prefix_name

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

__all__ = ["WSGIMiddleware"]


class WSGIMiddleware:
    def __init__(self, app: WSGIApp, name: Optional[Callable[[Environ], str]] = None) -> None:
        self.app = app
        self.name = name

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        req = _Request(self, environ)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            req.status = status
            return start_response(status, headers, exc_info)

        tok = _core._set(req.state)
        p = _request.profiler
        if p is not None:
            req.begin_profile(p)
        try:
            body = self.app(environ, start)
        except Exception:
            req.end_profile()
            _core._reset(tok)
            req.finish(error=True)
            raise
        except BaseException:
            req.end_profile()
            _core._reset(tok)
            req.finish(error=False)
            raise
        req.end_profile()
        _core._reset(tok)
        return _Body(body, req)

    def handler_name(self, environ: Environ, state: list[Any]) -> str:
        if state[1]:
            return str(state[1])
        if self.name is not None:
            try:
                return self.name(environ)
            except Exception:
                pass
        return path_prefix_name(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/"))


class _Request:
    __slots__ = ("mw", "environ", "state", "t0", "status", "done", "profiler", "prof")

    def __init__(self, mw: WSGIMiddleware, environ: Environ) -> None:
        self.mw = mw
        self.environ = environ
        self.state: list[Any] = [0] * _core.registry.width
        self.t0 = _core._now()
        self.status = ""
        self.done = False
        self.profiler: Any = None
        self.prof: Any = None

    def begin_profile(self, p: Any) -> None:
        # The name is only known once the framework has routed the request.  The profile
        # covers the app call; a streamed body is produced outside it.
        self.profiler, self.prof = p, p.begin(None)

    def end_profile(self) -> None:
        if self.prof is not None:
            prof, self.prof = self.prof, None
            try:
                name = self.mw.handler_name(self.environ, self.state)
            except Exception:
                name = "_unnamed"
            self.profiler.end(prof, name, _core._now() - self.t0, self.state)

    def finish(self, error: bool) -> None:
        if self.done:
            return
        self.done = True
        t = _core._now() - self.t0
        err = 1 if error or self.status[:1] == "5" else 0
        try:
            name = self.mw.handler_name(self.environ, self.state)
        except Exception:
            name = "_unnamed"
        if _request.dimension_functions:
            _request.config_dimensions(name, self.state, self.environ)
        _core._record(name, t, err, self.state)


class _Body:
    """The app's response iterable, run inside the request; recorded on ``close()``."""

    def __init__(self, body: Iterable[bytes], req: _Request) -> None:
        self._body = body
        self._req = req
        self._error = False

    def __iter__(self) -> Iterator[bytes]:
        st = self._req.state
        tok = _core._set(st)
        try:
            it = iter(self._body)
        except Exception:
            self._error = True
            raise
        finally:
            _core._reset(tok)
        while True:
            tok = _core._set(st)
            try:
                chunk = next(it)
            except StopIteration:
                # Servers call close() next; some clients (test clients) only much later,
                # so the request ends with its last chunk.
                self._req.finish(self._error)
                return
            except Exception:
                self._error = True
                self._req.finish(True)
                raise
            finally:
                _core._reset(tok)
            yield chunk

    def close(self) -> None:
        tok = _core._set(self._req.state)
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        except Exception:
            self._error = True
            raise
        finally:
            _core._reset(tok)
            self._req.finish(self._error)
