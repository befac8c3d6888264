"""The matrix's maple and haven apps, each request made through the framework's own dispatch.

One app per framework, built the same way and instrumented with
``callwatch.integrations.maple.instrument``: ``work`` is an app route from before
``instrument()``, ``renamed`` an app route added after it, ``boom`` a blueprint's route
(endpoint ``mx.boom``) merged as ``run()`` merges it.  A request's box carries the
command, and ``n`` in its body; a view answers ``ret=0, body=b"ok"``.

maple: a worker's ``Connection`` (maple's ``Worker`` and ``Connection`` classes) connected
to a gateway socket on loopback.  ``request()`` queues one client request (maple's ``Task``
around a netkit ``Box``, as maple's gateway sends it) and runs one turn of the loop in
``Connection.run`` (``_handle``: ask for a task, read it, build maple's ``Request``,
dispatch), then reads the worker's ask and its answer off the gateway side.

haven: ``GHaven._handle_stream``, what its gevent ``StreamServer`` calls for each accepted
client socket, given one end of a socket pair: the client's box, then the end of its
stream, so haven's connection loop dispatches the request and returns.
"""

from __future__ import annotations

import socket
from typing import Any, Callable

from maple import Blueprint, Task, Workshop, constants
from netkit.box import Box
from netkit.stream import Stream

from callwatch.integrations.maple import instrument

from apps import matrix

WORK, BOOM, RENAMED = 1, 2, 3
COMMANDS = {"work": WORK, "boom": BOOM, "renamed": RENAMED}
#: What a view answers when it returns.
OK = dict(ret=0, body=b"ok")
#: How long a socket of the test waits for the other side.
TIMEOUT = 10

Reply = Callable[[Any, dict[str, Any]], Any]


def build(app: Any, blueprint: Callable[[str], Any], reply: Reply) -> Any:
    @app.route(WORK)
    def work(request: Any) -> None:
        matrix.work(int(request.box.body))
        reply(request, OK)

    instrument(app)

    @app.route(RENAMED)
    def renamed(request: Any) -> None:
        matrix.renamed()
        reply(request, OK)

    mx = blueprint("mx")

    @mx.route(BOOM)
    def boom(request: Any) -> None:
        matrix.boom()

    app.register_blueprint(mx)
    app._merge_routes()  # what run() does first
    return app


def read(stream: Stream, box: Box) -> Box:
    """The next box of ``box``'s class off ``stream``."""
    if not stream.read_with_checker(box.unpack):
        raise ConnectionError("the other side closed the connection")
    return box


class MapleWorker:
    """A maple worker connected to a gateway socket of the test's own."""

    def __init__(self) -> None:
        self.app = build(Workshop(), Blueprint, lambda request, data: request.write_to_client(data))
        self._conn: Any = None
        self._gateway = Stream()
        self._sn = 0

    def _connect(self) -> None:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(TIMEOUT)
            worker = self.app.worker_class(self.app)
            conn = self.app.connection_class(worker, listener.getsockname(), TIMEOUT)
            worker.conn = conn
            assert conn._connect(), "the worker did not connect"  # what _handle does while closed
            sock, _ = listener.accept()
        sock.settimeout(TIMEOUT)
        self._gateway.sock = sock
        self._conn = conn

    def request(self, cmd: int, body: bytes) -> Box:
        """One client request through the worker; the box the client is answered."""
        if self._conn is None:
            self._connect()
        self._sn += 1
        box = Box(dict(cmd=cmd, sn=self._sn, body=body))
        self._gateway.write(Task(dict(cmd=constants.CMD_CLIENT_REQ, conn_id=self._sn, body=box.pack())).pack())
        self._conn._handle()
        ask = read(self._gateway, Task())
        assert ask.cmd == constants.CMD_WORKER_ASK_FOR_TASK, ask
        answer = read(self._gateway, Task())
        assert (answer.cmd, answer.conn_id) == (constants.CMD_WRITE_TO_CLIENT, self._sn), answer
        rsp = Box()
        assert rsp.unpack(answer.body) > 0, answer
        return rsp


class HavenServer:
    """A haven ``GHaven`` handed client sockets as its server hands them."""

    def __init__(self) -> None:
        from haven import GBlueprint, GHaven

        self.app = build(GHaven(Box), GBlueprint, lambda request, data: request.write(data))
        self._sn = 0

    def request(self, cmd: int, body: bytes) -> Box:
        """One client request on a connection of its own; the box the client is answered."""
        self._sn += 1
        server, client = socket.socketpair()
        with server, client:
            for s in (server, client):
                s.settimeout(TIMEOUT)
            client.sendall(Box(dict(cmd=cmd, sn=self._sn, body=body)).pack())
            client.shutdown(socket.SHUT_WR)  # the client is done: haven's loop ends after this request
            self.app._handle_stream(server, ("127.0.0.1", 0))
            return read(Stream(client), Box())
