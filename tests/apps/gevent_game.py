"""A gevent game server dispatching by command id, like ``@app.route(2)``.

Each line a client sends is ``<command id> <args...>``; every command is a callwatch
handler through the router adapter, and greenlets switch inside handlers (monkey-patched
sleeps), so many requests interleave in one thread.
"""

from gevent import monkey

monkey.patch_all()

import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import gevent  # noqa: E402
from gevent.server import StreamServer  # noqa: E402

import callwatch  # noqa: E402
from callwatch.integrations.router import instrument  # noqa: E402

from apps import shop  # noqa: E402


class Game:
    def __init__(self) -> None:
        self.routes: dict[int, Callable[..., Any]] = {}

    def route(self, cmd: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.routes[cmd] = fn
            return fn
        return register


game = Game()
game.route = instrument(game.route, names={2: "login"})  # type: ignore[method-assign]


@game.route(2)
def cmd_login(uid: int) -> None:
    shop.cache_get(f"session:{uid}")
    time.sleep(0.002)  # a greenlet switch
    shop.get_item(uid)


@game.route(3)
def join_table(uid: int, players: int) -> None:
    for p in range(players):
        shop.get_price(p)  # sleeps 1 ms: switches between every watched call
    callwatch.dimension("players", players)


def handle(sock: Any, addr: Any) -> None:
    f = sock.makefile("rwb")
    for line in f:
        cmd, *args = (int(x) for x in line.split())
        game.routes[cmd](*args)
        f.write(b"ok\n")
        f.flush()


def main() -> None:
    callwatch.configure(strict=True)
    server = StreamServer(("127.0.0.1", int(sys.argv[1])), handle)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    server.serve_forever()
    callwatch.shutdown()


if __name__ == "__main__":
    main()
