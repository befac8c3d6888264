"""Framework integrations, one module each; the core never imports a framework.

- ``callwatch.integrations.wsgi``   WSGIMiddleware (any WSGI app; streamed bodies included)
- ``callwatch.integrations.asgi``   ASGIMiddleware (HTTP; lifespan and websockets pass through)
- ``callwatch.integrations.flask``  CallWatch(app) / init_app: handler = endpoint name
- ``callwatch.integrations.django`` CallWatchMiddleware: handler = URL name or view path
- ``callwatch.integrations.router`` instrument a command router (``@app.route(2)``)
- ``callwatch.integrations.maple``  instrument(app): maple and haven routes, blueprints included;
  handler = endpoint (``game.join_table``) or command number

Each is a thin adapter over one request lifecycle, ``callwatch._request.RoutedRequest`` (begin,
name after routing, finish with the error or status; see its docstring), and uses no other
internal name.  A new integration also gets a row in tests/test_matrix.py, which runs the
same assertions over every entry point.
"""
