"""Framework integrations, one module each; the core never imports a framework.

- ``callwatch.integrations.wsgi``   WSGIMiddleware (any WSGI app; streamed bodies included)
- ``callwatch.integrations.asgi``   ASGIMiddleware (HTTP; lifespan and websockets pass through)
- ``callwatch.integrations.flask``  CallWatch(app) / init_app: handler = endpoint name
- ``callwatch.integrations.django`` CallWatchMiddleware: handler = URL name or view path
- ``callwatch.integrations.router`` instrument a command router (``@app.route(2)``)
"""
