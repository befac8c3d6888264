"""A maple Workshop game server for tests/test_maple.py.

    python -m apps.maple_game <gateway port> <workers> <master|worker>

``master``: callwatch.configure() (``$CALLWATCH_CONFIG``) in the master before run();
``worker``: instrument(app, config=...) configures each worker as it starts.  Either way
instrument() runs before some routes and both blueprints are added, so those are routes
added after the call.  Each view answers with its worker's pid, so the test knows which
process served it.  The two blueprints both name their view ``join``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from maple import Blueprint, Workshop

import callwatch
from callwatch.integrations.maple import instrument

from apps import shop

LOGIN, BOOM, LOBBY_JOIN, TABLE_JOIN, LEAVE = 1, 2, 10, 20, 30


def answer(request: Any) -> None:
    request.write_to_client(dict(ret=0, body=str(os.getpid())))


app = Workshop()


@app.route(LOGIN)
def login(request: Any) -> None:
    shop.get_item(1)
    shop.get_item(2)
    shop.cache_get("session")
    answer(request)


def main() -> None:
    port, workers, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if mode == "master":
        callwatch.configure(strict=True)
        instrument(app)
    else:
        instrument(app, config=os.environ["CALLWATCH_CONFIG"])
    add_later_routes()
    app.run("127.0.0.1", port, workers=workers)


def add_later_routes() -> None:
    lobby, table = Blueprint("lobby"), Blueprint("table")

    @app.route(BOOM)
    def boom(request: Any) -> None:
        shop.get_item(0)
        raise RuntimeError("boom")

    @lobby.route(LOBBY_JOIN)
    def join(request: Any) -> None:  # noqa: F811 (the same name in both blueprints)
        shop.get_price(1)
        answer(request)

    @table.route(TABLE_JOIN)  # type: ignore[no-redef]
    def join(request: Any) -> None:  # noqa: F811
        for i in range(3):
            shop.get_item(i)
        answer(request)

    @table.route(LEAVE)
    def leave(request: Any) -> None:
        answer(request)

    app.register_blueprint(lobby)
    app.register_blueprint(table)


if __name__ == "__main__":
    main()
