"""A Flask app: handler names come from the endpoints."""

from __future__ import annotations

import os

import flask

import callwatch
from callwatch.integrations.flask import CallWatch

from apps import shop

app = flask.Flask(__name__)
CallWatch(app)
if os.environ.get("CALLWATCH_CONFIG"):  # set by the server tests; in-process tests configure themselves
    callwatch.configure(strict=True)  # under gunicorn --preload this runs in the master, before fork


@app.get("/items/<int:n>")
def list_items(n: int) -> dict[str, int]:
    shop.cache_get("items")
    for i in range(n):
        shop.get_item(i)
    return {"n": n}


@app.get("/prices/<int:n>")
def prices(n: int) -> dict[str, int]:
    total = 0
    for i in range(n):
        total += shop.get_price(i)
    return {"total": total}


@app.get("/stream/<int:n>")
def stream(n: int) -> flask.Response:
    def body():  # type: ignore[no-untyped-def]
        for i in range(n):
            shop.get_item(i)  # watched calls made while the body streams
            yield f"{i}\n"
    return flask.Response(body(), mimetype="text/plain")


@app.get("/boom")
def boom() -> str:
    shop.get_item(0)
    raise RuntimeError("boom")


@app.get("/dim/<int:players>")
def dim(players: int) -> dict[str, int]:
    callwatch.dimension("players", players)
    for i in range(players):
        shop.get_item(i)
    return {"players": players}


class Kept:
    """What /leak keeps: only ``KEPT`` holds it (the memory tests' leaking worker)."""


KEPT: list[Kept] = []


@app.get("/leak/<int:n>")
def leak(n: int) -> dict[str, str]:
    from callwatch import _runtime

    KEPT.extend(Kept() for _ in range(n))
    rt = _runtime.active()
    return {"worker": rt.worker if rt is not None else ""}
