"""Presets against the real things: redis-server, sqlite3, SQLAlchemy on sqlite, HTTP."""

from __future__ import annotations

import asyncio
import http.server
import sqlite3
import threading
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import callwatch
from callwatch import _core
from callwatch.presets import PRESETS

from test_integrations import summary


def configure(*presets: str | dict[str, str]) -> None:
    watch = [p if isinstance(p, dict) else {"preset": p} for p in presets]
    callwatch.configure({"watch": watch}, start_thread=False, strict=True)


def test_the_config_knows_every_preset() -> None:
    from callwatch.config import PRESET_NAMES

    assert tuple(PRESETS) == PRESET_NAMES


def test_redis_counts_each_command_and_a_pipeline_once(redis_port: int) -> None:
    import redis

    configure("redis")
    r = redis.Redis(port=redis_port)
    with callwatch.request("h"):
        r.set("k", "v")
        assert r.get("k") == b"v"
        r.get("k")
        with r.pipeline() as p:
            p.incr("n").incr("n").get("n")
            assert p.execute()[-1] == b"2"
    assert summary(_core.collector.swap(0))["h"] == (1, 0, {
        "redis_SET": 1, "redis_GET": 2, "redis_pipeline": 1, "redis": 4})
    callwatch.shutdown()
    assert not hasattr(redis.Redis.execute_command, _core.MARK)  # undone


def test_redis_asyncio(redis_port: int) -> None:
    import redis.asyncio as aredis

    configure({"preset": "redis", "group": "cache"})

    async def main() -> None:
        r = aredis.Redis(port=redis_port)
        async with callwatch.request("ah"):
            await r.set("a", "1")
            await asyncio.gather(r.get("a"), r.get("a"), r.get("a"))
        await r.aclose()

    asyncio.run(main())
    assert summary(_core.collector.swap(0))["ah"] == (1, 0, {"redis_SET": 1, "redis_GET": 3, "cache": 4})


def test_dbapi_sqlite3() -> None:
    configure("dbapi")
    conn = sqlite3.connect(":memory:")
    with callwatch.request("q"):
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,), (3,)])
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM t")
        assert cur.fetchone() == (3,)
        assert conn.execute("SELECT sum(x) FROM t").fetchone() == (6,)
    assert summary(_core.collector.swap(0))["q"] == (1, 0, {"db_execute": 3, "db_executemany": 1, "db": 4})
    callwatch.shutdown()
    assert "factory" not in repr(sqlite3.connect)  # the original again
    assert type(sqlite3.connect(":memory:")) is sqlite3.Connection


def test_sqlalchemy_core_and_orm_on_sqlite() -> None:
    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]

    engine = sa.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    statements: list[str] = []  # an independent count, from SQLAlchemy itself
    sa.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    configure("sqlalchemy")
    with callwatch.request("orm"):
        with Session(engine) as s:
            s.add_all([User(name="a"), User(name="b")])
            s.commit()
            assert [u.name for u in s.scalars(sa.select(User).order_by(User.id))] == ["a", "b"]
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT count(*) FROM users")).scalar() == 2
            with pytest.raises(sa.exc.OperationalError):
                c.execute(sa.text("SELECT * FROM nope"))
    n = len(statements)  # the ORM's INSERT(s), the SELECT, the count, the failing statement
    assert n >= 4
    assert summary(_core.collector.swap(0))["orm"] == (1, 0, {"sqlalchemy_execute": n, "db": n})
    callwatch.shutdown()
    with engine.connect() as c, callwatch.request("after"):
        c.execute(sa.text("SELECT 1"))
    assert summary(_core.collector.swap(0))["after"] == (1, 0, {})  # listeners removed


@pytest.fixture
def http_port() -> Iterator[int]:
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_requests_and_httpx(http_port: int) -> None:
    import httpx
    import requests

    configure("requests", "httpx")
    url = f"http://127.0.0.1:{http_port}/"
    with callwatch.request("out"):
        assert requests.get(url, timeout=5).text == "ok"
        with requests.Session() as s:
            s.get(url, timeout=5)
            s.get(url, timeout=5)
        assert httpx.get(url).text == "ok"

        async def a() -> None:
            async with httpx.AsyncClient() as c:
                await c.get(url)

        asyncio.run(a())
    assert summary(_core.collector.swap(0))["out"] == (1, 0, {"http_requests": 3, "http_httpx": 2, "http": 5})


def test_a_preset_whose_library_is_missing_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "requests" or name.startswith("requests."):
            raise ImportError("No module named 'requests'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr("importlib.import_module", lambda name: fake_import(name))
    with pytest.raises(callwatch.ConfigError) as ei:
        callwatch.configure({"watch": [{"preset": "requests"}]}, strict=True)
    assert str(ei.value) == ("<dict>: preset: the requests preset needs the 'requests' package, which is not "
                             "installed. Fix: pip install requests, or remove the preset")
