"""callwatch.integrations.maple: endpoints that are one metric name once sanitized.

maple names a blueprint's endpoint ``<blueprint>.<function>``; the exporter sanitizes a
handler name into one Graphite path component (``lobby.join`` -> ``lobby_join``) and
merges handlers whose names sanitize alike.  The integration keeps such commands apart,
as it does two commands of one endpoint, and says so once.  Read back from what the
exporter sends.
"""

from __future__ import annotations

from typing import Any

import pytest
from maple import Blueprint, Workshop

import callwatch
from callwatch.integrations.maple import instrument
from callwatch.testing import FakeClock, RecordingSender


def test_endpoints_one_metric_name_apart_are_two_series_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    sender, clock = RecordingSender(), FakeClock(1_700_000_000)
    app = instrument(Workshop())
    lobby = Blueprint("lobby")

    @lobby.route(10)
    def join(request: Any) -> None:
        pass

    @app.route(11)
    def lobby_join(request: Any) -> None:
        pass

    app.register_blueprint(lobby)
    app._merge_routes()  # what run() does first: "lobby.join" comes after "lobby_join"
    with clock:
        callwatch.configure({"graphite": {"interval": 10}},
                            sender=sender, clock=clock, start_thread=False, strict=True)
        try:
            for cmd in (10, 11, 11):
                app.get_route_rule(cmd)["view_func"](object())
            clock.advance(10)
            callwatch.flush()
            sent = b"".join(sender.payloads).decode().splitlines()
        finally:
            callwatch.shutdown()
    # after ".handler.": the slot's name depends on who else holds one now
    assert sorted(line.partition(".handler.")[2] for line in sent if ".requests " in line) == [
        "lobby_join.requests 2 1700000000", "lobby_join_10.requests 1 1700000000"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["callwatch: the maple endpoints 'lobby_join' (command 11) and 'lobby.join' (command 10) are "
                        "one metric name, 'lobby_join'; command 10 is reported as 'lobby.join_10'. Fix: give one of "
                        "them another endpoint (route(10, endpoint=...))"]
