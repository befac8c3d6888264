"""The matrix's Flask app (handler names: the endpoints)."""

from __future__ import annotations

import flask

from callwatch.integrations.flask import CallWatch

from apps import matrix

app = flask.Flask(__name__)
CallWatch(app)


@app.get("/work/<int:n>")
def work(n: int) -> str:
    matrix.work(n)
    return "ok"


@app.get("/boom")
def boom() -> str:
    matrix.boom()
    return "unreachable"


@app.get("/e503")
def e503() -> tuple[str, int]:
    matrix.work(1)
    return "no", 503


@app.get("/stream/<int:n>")
def stream(n: int) -> flask.Response:
    return flask.Response(matrix.chunks(n), mimetype="text/plain")


@app.get("/renamed")
def renamed() -> str:
    matrix.renamed()
    return "ok"
