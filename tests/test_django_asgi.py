"""Django under a real ASGI server: uvicorn -> Django's ASGI handler -> callwatch's middleware
-> async views (and a sync one), read back from a real carbon-cache through graphite-web.

The views (tests/apps/djsite/asgi_views.py) make known watched calls: concurrent awaits in
one request, a sync function in sync_to_async's thread, an async streamed body, an
exception.  After the server stops, the totals per handler and per watched function, summed
over every second, must equal what was sent, exactly.  Django refuses ASGI lifespan events
and uvicorn ends by re-raising SIGTERM (no atexit): the middleware makes Django's handler
answer them, so the last partial interval is sent at shutdown.
"""

from __future__ import annotations

import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from apps import config as app_config
from conftest import Graphite, free_ports
from test_servers import drive, server

# (path, times requested), interleaved and sent by 16 client threads at once
MIX = [("/aitems/3/", 60), ("/a/gather/5/", 60), ("/a/thread/4/", 40), ("/a/stream/3/", 40),
       ("/a/boom/", 10), ("/items/2/", 40)]
EXPECTED = {
    "aitem_list.requests": 60, "aitem_list.watch.aget_item.calls": 60 * 3,
    "a_gather.requests": 60, "a_gather.watch.aget_item.calls": 60 * 5, "a_gather.watch.cache_get.calls": 60,
    "a_gather.group.db.calls": 60 * 5,
    "a_thread.requests": 40, "a_thread.watch.get_item.calls": 40 * 4,
    "a_stream.requests": 40, "a_stream.watch.aget_item.calls": 40 * 3,
    "a_boom.requests": 10, "a_boom.errors": 10, "a_boom.watch.aget_item.calls": 10,
    "item_list.requests": 40, "item_list.watch.get_item.calls": 40 * 2, "item_list.watch.cache_get.calls": 40,
}


@pytest.mark.graphite
@pytest.mark.parametrize("workers", [
    pytest.param([], id="one-process"),
    pytest.param(["--workers", "2"], id="2-worker-processes"),  # uvicorn's multiprocessing (spawn) workers
])
def test_uvicorn_django_async_views_exact_totals(graphite: Graphite, tmp_path: Path, workers: list[str]) -> None:
    # A 60 s interval: the requests' counts are in the interval still open when the
    # server stops, so they reach Graphite only through the final flush at shutdown.
    prefix = "dja" + uuid.uuid4().hex[:8]
    cfg = app_config.write(tmp_path / "cw.yaml", port=graphite.line_port, prefix=prefix,
                           slot_dir=tmp_path / "slots", interval=60)
    (port,) = free_ports(1)
    start = int(time.time()) - 60  # points carry their interval's start
    paths = [p for i in range(60) for p, times in MIX if i < times]  # interleaved
    cmd = [sys.executable, "-m", "uvicorn", "apps.djsite.asgi:application", "--port", str(port),
           "--host", "127.0.0.1", "--log-level", "warning", *workers]
    # uvicorn ends by re-raising SIGTERM after its graceful shutdown: exit status -15.
    with server(cmd, port, cfg, tmp_path, exit_codes=(0, -signal.SIGTERM),
                env={"DJANGO_SETTINGS_MODULE": "apps.djsite.asgi_settings"}):
        drive(port, paths, concurrency=16)
    assert graphite.totals(prefix, start, EXPECTED) == EXPECTED
    slots = graphite.render(f"{prefix}.*.callwatch.points_sent", start - 5, int(time.time()) + 5)
    assert len(slots) == (2 if workers else 1), [s["target"] for s in slots]  # a slot per process serving


def test_django_asgi_handler_answers_lifespan_and_flushes_at_shutdown(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import django
    import callwatch
    from callwatch import _runtime
    from callwatch.testing import RecordingSender

    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "apps.djsite.settings")
    django.setup()
    from django.core.asgi import get_asgi_application

    sender = RecordingSender()
    callwatch.configure({"graphite": {"host": "unused.invalid", "prefix": "cw"}, "naming": {"host": "h"}},
                        sender=sender, start_thread=False, strict=True)
    app = get_asgi_application()  # loads the middleware, in async mode
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    sent: list[dict[str, str]] = []

    async def send(message: dict[str, str]) -> None:
        sent.append(message)

    async def main() -> None:
        task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}}, inbox.get, send))
        await inbox.put({"type": "lifespan.startup"})
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(task, 10)

    with callwatch.request("before_stop"):
        pass
    asyncio.run(main())
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert _runtime.active() is None  # shut down: the partial interval was sent
    assert any(line.startswith("cw.h_w0.handler.before_stop.requests 1 ") for line in sender.lines)
