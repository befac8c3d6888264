"""A haven GHaven game server and its gevent clients, for tests/test_maple.py.

    python -m apps.maple_haven serve <port>
    python -m apps.maple_haven clients <port> <clients> <rounds>

The server is instrumented with ``instrument(app, config=$CALLWATCH_CONFIG)`` before its
blueprint is registered.  Each client is a greenlet with its own connection, sending
``ROUND`` (login x2, lobby.join, table.join, boom) ``rounds`` times, one request at a
time; the clients print how many answers each command got, as JSON.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
from haven import GBlueprint, GHaven  # noqa: E402
from netkit.box import Box  # noqa: E402

from callwatch.integrations.maple import instrument  # noqa: E402

from apps import shop  # noqa: E402

LOGIN, BOOM, LOBBY_JOIN, TABLE_JOIN = 1, 2, 10, 20
ROUND = [LOGIN, LOGIN, LOBBY_JOIN, TABLE_JOIN, BOOM]

app = GHaven(Box)


@app.route(LOGIN)
def login(request: Any) -> None:
    shop.get_item(1)
    shop.get_price(1)  # sleeps: the greenlets switch inside requests
    request.write(dict(ret=0))


def serve(port: int) -> None:
    instrument(app, config=os.environ["CALLWATCH_CONFIG"])
    lobby, table = GBlueprint("lobby"), GBlueprint("table")

    @app.route(BOOM)
    def boom(request: Any) -> None:
        shop.cache_get("x")
        raise RuntimeError("boom")

    @lobby.route(LOBBY_JOIN)
    def join(request: Any) -> None:
        shop.get_price(2)
        shop.get_price(3)
        request.write(dict(ret=0))

    @table.route(TABLE_JOIN)  # type: ignore[no-redef]
    def join(request: Any) -> None:  # noqa: F811 (the same name in both blueprints)
        shop.get_item(2)
        request.write(dict(ret=0))

    app.register_blueprint(lobby)
    app.register_blueprint(table)
    app.run("127.0.0.1", port)


def client(port: int, rounds: int, answers: Counter[int]) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        buf = b""
        for sn in range(rounds * len(ROUND)):
            sock.sendall(Box(dict(cmd=ROUND[sn % len(ROUND)], sn=sn)).pack())
            box = Box()
            while (used := box.unpack(buf)) == 0:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("haven closed the connection")
                buf += chunk
            if used < 0:
                raise ValueError(f"bad answer: {buf!r}")
            buf = buf[used:]
            answers[box.cmd] += 1


def clients(port: int, n: int, rounds: int) -> None:
    answers: Counter[int] = Counter()
    jobs = [gevent.spawn(client, port, rounds, answers) for _ in range(n)]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    print(json.dumps({str(k): v for k, v in sorted(answers.items())}))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        clients(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
