"""Export: exact metric lines, buffering across outages, and the wire (real sockets)."""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest

import callwatch
from callwatch.export import GraphyteSender, Namer, sanitize, split_lines
from callwatch.testing import FakeClock, RecordingSender

from conftest import TcpReceiver

T0 = 1_700_000_000  # a multiple of 10


def setup(clock: FakeClock, sender: RecordingSender, **graphite: Any) -> callwatch.Runtime:
    cfg = {"graphite": {"host": "unused.invalid", "interval": 10, "prefix": "cw", **graphite},
           "naming": {"host": "h1"}, "handlers": {"rename": {"GET /u/<id>": "users_show"}, "max_handlers": 3}}
    rt = callwatch.configure(cfg, sender=sender, clock=clock, start_thread=False, strict=True)
    assert rt is not None
    return rt


def drive(clock: FakeClock) -> None:
    @callwatch.watch(name="get_user", group="db")
    def get_user() -> None:
        clock.advance(0.001)

    @callwatch.handler("login")
    def login(n: int) -> None:
        for _ in range(n):
            get_user()
        clock.advance(0.001)

    login(2)  # 3 ms, 2 calls
    login(0)  # 1 ms, 0 calls


EXPECTED_LOGIN = {
    "cw.h1_w0.handler.login.requests": 2,
    "cw.h1_w0.handler.login.errors": 0,
    "cw.h1_w0.handler.login.response_ms.mean": 2.0,
    "cw.h1_w0.handler.login.response_ms.max": 3.0,
    "cw.h1_w0.handler.login.watch.get_user.calls": 2,
    "cw.h1_w0.handler.login.watch.get_user.ms": 2.0,
    "cw.h1_w0.handler.login.watch.get_user.calls_per_request.mean": 1.0,
    "cw.h1_w0.handler.login.watch.get_user.calls_per_request.max": 2,
    "cw.h1_w0.handler.login.watch.get_user.ms_per_request.mean": 1.0,
    "cw.h1_w0.handler.login.watch.get_user.ms_per_request.max": 2.0,
    "cw.h1_w0.handler.login.watch.get_user.share": 50.0,
    "cw.h1_w0.handler.login.group.db.calls": 2,
    "cw.h1_w0.handler.login.group.db.ms": 2.0,
    "cw.h1_w0.handler.login.group.db.calls_per_request.mean": 1.0,
    "cw.h1_w0.handler.login.group.db.calls_per_request.max": 2,
    "cw.h1_w0.handler.login.group.db.ms_per_request.mean": 1.0,
    "cw.h1_w0.handler.login.group.db.ms_per_request.max": 2.0,
    "cw.h1_w0.handler.login.group.db.share": 50.0,
}


def test_one_interval_gives_exact_lines_at_the_interval_start() -> None:
    clock, sender = FakeClock(T0 + 3), RecordingSender()
    with clock:
        setup(clock, sender)
        drive(clock)
        clock.advance(10)
        snap = callwatch.flush()
    assert snap is not None and (snap.start, snap.end) == (T0, T0 + 10)
    assert len(sender.payloads) == 1
    got = {}
    for line in sender.lines:
        name, value, ts = line.split(" ")
        assert ts == str(T0)
        got[name] = value
    for stat in ("p50", "p90", "p99"):  # rank q*(n-1), rounded down: 1 ms for n=2; sketch within 1 %
        v = float(got.pop(f"cw.h1_w0.handler.login.response_ms.{stat}"))
        assert abs(v - 1.0) <= 0.01
    flush_ms = float(got.pop("cw.h1_w0.callwatch.flush_ms"))
    assert flush_ms >= 0
    assert got == {**{k: str(v) for k, v in EXPECTED_LOGIN.items()},
                   "cw.h1_w0.callwatch.points_sent": "0", "cw.h1_w0.callwatch.points_dropped": "0",
                   "cw.h1_w0.callwatch.send_errors": "0", "cw.h1_w0.callwatch.points_buffered": "0",
                   "cw.h1_w0.callwatch.internal_errors": "0", "cw.h1_w0.callwatch.spikes_active": "0"}
    # the exact bytes of one line, as graphyte builds it
    assert b"cw.h1_w0.handler.login.requests 2 1700000000\n" in sender.data


def test_percentiles_are_within_one_percent() -> None:
    clock, sender = FakeClock(T0), RecordingSender()
    with clock:
        setup(clock, sender)
        for ms in range(1, 101):
            with callwatch.request("h"):
                clock.advance(ms / 1000)
        clock.advance(10)
        callwatch.flush()
    v = sender.values()
    for stat, true in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0), ("mean", 50.5)):
        got = v[(f"cw.h1_w0.handler.h.response_ms.{stat}", T0)]
        assert abs(got - true) <= 0.01 * true, (stat, got)


def test_dimensions_add_split_series_next_to_the_totals() -> None:
    clock, sender = FakeClock(T0), RecordingSender()

    @callwatch.watch(name="get_player")
    def get_player() -> None:
        pass

    with clock:
        setup(clock, sender)
        for players in (2, 7, 7):
            with callwatch.request("deal"):
                callwatch.dimension("players", players)
                for _ in range(players):
                    get_player()
        clock.advance(10)
        callwatch.flush()
    v = sender.values()
    assert v[("cw.h1_w0.handler.deal.requests", T0)] == 3
    assert v[("cw.h1_w0.handler.deal.watch.get_player.calls_per_request.mean", T0)] == round(16 / 3, 6)
    assert v[("cw.h1_w0.handler.deal.by.players.2.requests", T0)] == 1
    assert v[("cw.h1_w0.handler.deal.by.players.7.requests", T0)] == 2
    assert v[("cw.h1_w0.handler.deal.by.players.7.watch.get_player.calls_per_request.mean", T0)] == 7.0
    assert v[("cw.h1_w0.handler.deal.by.players.2.watch.get_player.calls_per_request.mean", T0)] == 2.0


def test_tagged_names() -> None:
    clock, sender = FakeClock(T0), RecordingSender()
    with clock:
        setup(clock, sender, tags=True)
        drive(clock)
        clock.advance(10)
        callwatch.flush()
    lines = set(sender.lines)
    assert f"cw.requests;handler=login;host=h1;worker=w0 2 {T0}" in lines
    assert f"cw.watch.calls_per_request.max;function=get_user;group=db;handler=login;host=h1;worker=w0 2 {T0}" in lines
    assert f"cw.group.calls;group=db;handler=login;host=h1;worker=w0 2 {T0}" in lines
    assert f"cw.callwatch.points_sent;host=h1;worker=w0 0 {T0}" in lines


def test_next_interval_reports_zero_for_what_was_seen_before() -> None:
    clock, sender = FakeClock(T0), RecordingSender()
    with clock:
        setup(clock, sender)
        drive(clock)
        clock.advance(10)
        callwatch.flush()
        clock.advance(10)
        callwatch.flush()
    v = sender.values()
    assert v[("cw.h1_w0.handler.login.requests", T0 + 10)] == 0
    assert v[("cw.h1_w0.handler.login.watch.get_user.calls", T0 + 10)] == 0
    assert ("cw.h1_w0.handler.login.response_ms.mean", T0 + 10) not in v  # no requests, no timing
    assert v[("cw.h1_w0.callwatch.points_sent", T0 + 10)] == len([k for k in v if k[1] == T0])


def test_outage_keeps_points_and_resends_them_with_their_timestamps() -> None:
    clock, sender = FakeClock(T0), RecordingSender()
    with clock:
        rt = setup(clock, sender)
        sender.fail = True
        for _ in range(3):
            drive(clock)
            clock.advance(10)
            callwatch.flush()
        assert sender.payloads == [] and rt.exporter.buffered > 0
        assert rt.exporter.stats.send_errors == 3
        sender.fail = False
        clock.advance(10)
        callwatch.flush()
    v = sender.values()
    for t in (T0, T0 + 10, T0 + 20):
        assert v[("cw.h1_w0.handler.login.requests", t)] == 2
    assert v[("cw.h1_w0.handler.login.requests", T0 + 30)] == 0
    # each interval reports the send errors since the previous report: 0, 1, 1, 1
    assert [v[("cw.h1_w0.callwatch.send_errors", T0 + 10 * i)] for i in range(4)] == [0, 1, 1, 1]
    assert rt.exporter.buffered == 0


def test_full_buffer_drops_the_oldest_and_counts_them() -> None:
    clock, sender = FakeClock(T0), RecordingSender()
    with clock:
        rt = setup(clock, sender, max_buffered_points=10)
        sender.fail = True
        drive(clock)
        clock.advance(10)
        callwatch.flush()
        per_flush = rt.exporter.stats.points_dropped + rt.exporter.buffered
        assert rt.exporter.buffered == 10
        assert rt.exporter.stats.points_dropped == per_flush - 10
        dropped = rt.exporter.stats.points_dropped
        sender.fail = False
        clock.advance(10)
        callwatch.flush()
    v = sender.values()
    assert v[("cw.h1_w0.callwatch.points_dropped", T0 + 10)] == dropped
    st = rt.exporter.stats  # every point made is sent, dropped (counted) or still buffered
    assert st.points_made == st.points_sent + st.points_dropped + rt.exporter.buffered


def test_rename_sanitize_and_handler_cap() -> None:
    clock, sender = FakeClock(T0), RecordingSender()
    with clock:
        setup(clock, sender)
        for name in ["GET /u/<id>", "a.b c\nd", "ünï", "x" * 10_000, "one more", "and another"]:
            with callwatch.request(name):
                pass
        clock.advance(10)
        callwatch.flush()
    names = {n.split(".")[3] for n, _ in sender.values() if ".handler." in n}
    assert names == {"users_show", "a_b_c_d", "_n_", "_other"}  # cap of 3, then _other
    assert sender.values()[("cw.h1_w0.handler._other.requests", T0)] == 3
    for line in sender.lines:
        assert len(line.split(" ")) == 3


def test_namer_without_prefix_or_host() -> None:
    n = Namer("", "", tags=False)
    assert n.handler_metric("h", "requests") == ("handler.h.requests", {})
    w = Namer("cw", "web1", worker="w3")
    assert w.handler_metric("h", "requests") == ("cw.web1_w3.handler.h.requests", {})
    assert n.self_metric("points_sent") == ("callwatch.points_sent", {})
    t = Namer("", "", tags=True)
    assert t.handler_metric("h", "requests") == ("requests", {"handler": "h"})
    assert sanitize("") == "_" and sanitize("a/b") == "a_b" and sanitize("x" * 10_000) == "x" * 120


def test_split_lines_cuts_only_between_lines() -> None:
    payload = b"".join(b"m.%d %d 1\n" % (i, i) for i in range(1000))
    chunks = split_lines(payload, 100)
    assert b"".join(chunks) == payload
    assert all(len(c) <= 100 and c.endswith(b"\n") for c in chunks)
    assert split_lines(b"a" * 300 + b"\nb\n", 100) == [b"a" * 300 + b"\n", b"b\n"]


# -- the wire: real sockets on loopback -----------------------------------------------


def test_tcp_send_delivers_exact_bytes(tcp_receiver: TcpReceiver) -> None:
    sender = GraphyteSender("127.0.0.1", tcp_receiver.port, timeout=2)
    big = b"".join(sender.build_message(f"m.n{i}", i, T0) for i in range(20_000))  # ~400 kB
    sender.send_message(big)
    assert tcp_receiver.received == [big]


def test_tcp_send_fails_when_nothing_listens() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectionRefusedError):
        GraphyteSender("127.0.0.1", port, timeout=1).send_message(b"a 1 1\n")


def test_tcp_send_fails_when_the_peer_accepts_but_never_reads() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        with pytest.raises(OSError):  # socket.timeout is an OSError
            GraphyteSender("127.0.0.1", srv.getsockname()[1], timeout=0.5).send_message(b"a 1 1\n")
    finally:
        srv.close()


def test_udp_sends_whole_lines_per_datagram() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    try:
        sender = GraphyteSender("127.0.0.1", rx.getsockname()[1], protocol="udp")
        payload = b"".join(sender.build_message(f"m.n{i}", i, T0) for i in range(300))
        sender.send_message(payload)
        got = b""
        while len(got) < len(payload):
            d = rx.recv(65536)
            assert len(d) <= 1400 and d.endswith(b"\n")
            got += d
        assert got == payload
    finally:
        rx.close()


def test_non_string_handler_names_do_not_break_the_flush() -> None:
    clock, sender = FakeClock(T0), RecordingSender()
    with clock:
        setup(clock, sender)
        with callwatch.request(404):  # type: ignore[arg-type]
            pass
        clock.advance(10)
        callwatch.flush()
    assert sender.values()[("cw.h1_w0.handler.404.requests", T0)] == 1


def test_dimensions_from_config_functions(tmp_path: Any) -> None:
    clock, sender = FakeClock(T0), RecordingSender()
    p = tmp_path / "cw.yaml"
    p.write_text("graphite: {host: x, prefix: cw, interval: 10}\nnaming: {host: h1}\n"
                 "handlers:\n  dimensions:\n    deal: {players: 'cwsample.storage:players_of'}\n")

    @callwatch.handler("deal")
    def deal(table: object, n: int) -> int:
        return n

    with clock:
        callwatch.configure(p, sender=sender, clock=clock, start_thread=False, strict=True)
        deal("t", 2)
        deal("t", n=7)
        clock.advance(10)
        callwatch.flush()
    v = sender.values()
    assert v[("cw.h1_w0.handler.deal.by.players.2.requests", T0)] == 1
    assert v[("cw.h1_w0.handler.deal.by.players.7.requests", T0)] == 1


def test_dimension_function_errors_are_located(tmp_path: Any) -> None:
    p = tmp_path / "cw.yaml"
    p.write_text("handlers:\n  dimensions:\n    deal:\n      players: 'cwsample.storage:players_off'\n"
                 "      bad: 'not a path'\n")
    with pytest.raises(callwatch.ConfigError) as ei:
        callwatch.configure(p, strict=True)
    assert str(ei.value).splitlines() == [  # every problem of the file at once, by line
        f"{p}:4: target: 'cwsample.storage' has no attribute 'players_off' (from "
        "'cwsample.storage:players_off'). Fix: did you mean 'players_of'?",
        f"{p}:5: handlers.dimensions.deal.bad: 'not a path' is not of the form 'module.path:function'. "
        "Fix: write e.g. 'dimensions: {deal: {players: \"myapp.dims:players_at_table\"}}'",
    ]
    p.write_text("handlers:\n  dimensions:\n    deal:\n      players: 'cwsample.storage:players_off'\n")
    with pytest.raises(callwatch.ConfigError) as ei:
        callwatch.configure(p, strict=True)
    assert str(ei.value) == (f"{p}:4: target: 'cwsample.storage' has no attribute 'players_off' (from "
                             "'cwsample.storage:players_off'). Fix: did you mean 'players_of'?")


# -- the pipeline: swap -> stages -> naming -> buffer -> send -> sinks, then hooks ----------


def test_stages_annotate_before_sending_and_sinks_see_what_was_sent(caplog: pytest.LogCaptureFixture) -> None:
    from callwatch.aggregate import Collector, Registry, Snapshot
    from callwatch.export import Exporter

    clock, sender = FakeClock(T0), RecordingSender()
    collector = Collector(Registry())
    collector.set_start(T0)
    seen: list[str] = []

    def broken_stage(snap: Snapshot) -> None:
        seen.append("broken stage")
        raise RuntimeError("stage bug")

    def spike_stage(snap: Snapshot) -> None:
        seen.append("stage")
        snap.spikes = {("login", "get_user", False): 3.5}

    def sink(snap: Snapshot) -> None:
        seen.append(f"sink after {len(sender.payloads)} payload(s), spikes {snap.spikes}")

    exporter = Exporter(collector, Namer("cw", "h1"), sender, interval=10, clock=clock,
                        stages=[broken_stage, spike_stage], sinks=[sink])
    exporter.hooks.append(lambda: seen.append("hook"))
    clock.advance(10)
    with caplog.at_level(logging.ERROR, logger="callwatch"):
        snap = exporter.flush()
    assert snap is not None and (snap.start, snap.end) == (T0, T0 + 10)
    assert seen == ["broken stage", "stage",
                    "sink after 1 payload(s), spikes {('login', 'get_user', False): 3.5}", "hook"]
    assert [r.getMessage().split(" <")[0] for r in caplog.records] == ["callwatch: snapshot stage"]
    assert sender.lines == [f"cw.h1.handler.login.watch.get_user.spike 3.5 {T0}",
                            f"cw.h1.callwatch.spikes_active 1 {T0}", f"cw.h1.callwatch.points_sent 0 {T0}",
                            f"cw.h1.callwatch.points_dropped 0 {T0}", f"cw.h1.callwatch.send_errors 0 {T0}",
                            f"cw.h1.callwatch.points_buffered 0 {T0}", f"cw.h1.callwatch.flush_ms 0.0 {T0}",
                            f"cw.h1.callwatch.internal_errors 0 {T0}"]
    seen.clear()
    assert exporter.flush() is None  # no interval ended: only the hooks run
    assert seen == ["hook"]


def test_a_backlog_goes_in_batches_of_at_most_one_mebibyte(tcp_receiver: TcpReceiver) -> None:
    from callwatch._buffer import SendBuffer

    buffer = SendBuffer(GraphyteSender("127.0.0.1", tcp_receiver.port, timeout=2), 200_000, "test")
    buffer.add([(f"m.n{i:06d}", 1, {}) for i in range(100_000)], T0)  # 100,000 lines of 23 bytes
    buffer.send()
    # 45,590 whole lines (1,048,570 bytes) fit in 1 MiB; two such batches, then the rest
    assert [len(p) for p in tcp_receiver.received] == [1_048_570, 1_048_570, 202_860]
    assert b"".join(tcp_receiver.received) == b"".join(b"m.n%06d 1 %d\n" % (i, T0) for i in range(100_000))
    assert (buffer.stats.points_sent, len(buffer)) == (100_000, 0)
