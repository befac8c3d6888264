"""Flask: ``CallWatch(app)`` or ``CallWatch().init_app(app)`` for app factories.

    from callwatch.integrations.flask import CallWatch
    app = Flask(__name__)
    CallWatch(app, config="callwatch.yaml")   # config optional: or call callwatch.configure

Each request is one request of the handler named after its endpoint (``show_user``),
``_unmatched`` for a 404 no route matched.  The WSGI middleware underneath times the whole
response, streamed bodies included.
"""

from __future__ import annotations

from typing import Any, Optional

import flask

import callwatch

from ._naming import UNMATCHED
from .wsgi import WSGIMiddleware

__all__ = ["CallWatch"]


class CallWatch:
    """The Flask extension: ``CallWatch(app, config=...)``, or ``CallWatch(config=...)`` then
    :meth:`init_app` for app factories. ``config`` (a YAML path or a dict) is passed to
    :func:`callwatch.configure` by :meth:`init_app`; without it, configure yourself."""

    def __init__(self, app: Optional[flask.Flask] = None, config: Any = None) -> None:
        self.config = config
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Configure callwatch (if ``config`` was given), wrap ``app.wsgi_app`` and name each
        request after its endpoint."""
        if self.config is not None:
            callwatch.configure(self.config)
        app.wsgi_app = WSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
        app.before_request(_name_by_endpoint)
        app.extensions["callwatch"] = self


def _name_by_endpoint() -> None:
    callwatch.name_request(flask.request.endpoint or UNMATCHED)
