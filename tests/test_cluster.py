"""A two-node Graphite cluster: carbon-c-relay (consistent hashing) in front of two
carbon-caches, one graphite-web reading both; callwatch sends to the relay."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

import callwatch
from callwatch.testing import FakeClock

import cwsample.storage as st

from conftest import ROOT, Graphite, free_ports

pytestmark = pytest.mark.graphite


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Graphite, list[Path]]]:
    base = tmp_path_factory.mktemp("cluster")
    relay, a1, a2, a3, b1, b2, b3, web = free_ports(8)
    env = dict(os.environ, GRAPHITE_CLUSTER="1", CARBON_LINE_PORT=str(relay), GRAPHITE_WEB_PORT=str(web),
               CACHE_A_LINE=str(a1), CACHE_A_PICKLE=str(a2), CACHE_A_QUERY=str(a3),
               CACHE_B_LINE=str(b1), CACHE_B_PICKLE=str(b2), CACHE_B_QUERY=str(b3))
    up = subprocess.run([str(ROOT / "scripts" / "graphite-up"), str(base)], env=env, capture_output=True,
                        text=True, timeout=600)
    if up.returncode != 0:
        pytest.fail(f"graphite-up (cluster) failed:\n{up.stdout}\n{up.stderr}")
    dirs = [Path(p) for p in dict(line.split("=", 1) for line in up.stdout.split())["WHISPER_DIRS"].split(":")]
    try:
        yield Graphite(base, relay, f"http://127.0.0.1:{web}"), dirs
    finally:
        subprocess.run([str(ROOT / "scripts" / "graphite-down"), str(base)], timeout=60)


def test_exact_numbers_through_the_relay(cluster: tuple[Graphite, list[Path]]) -> None:
    graphite, dirs = cluster
    prefix = "cl" + uuid.uuid4().hex[:8]
    t0 = (int(time.time()) - 300) // 10 * 10
    clock = FakeClock(t0)
    handlers = [f"h{i}" for i in range(12)]
    with clock:
        callwatch.configure({"graphite": {"host": "127.0.0.1", "port": graphite.line_port, "prefix": prefix,
                                          "interval": 10},
                             "naming": {"host": "h"}, "spikes": {"enabled": False},
                             "watch": [{"target": "cwsample.storage:Storage.get_*", "group": "db"}]},
                            clock=clock, start_thread=False, strict=True)
        s = st.Storage()
        for i, h in enumerate(handlers):
            for _ in range(i + 1):
                with callwatch.request(h):
                    s.get_players(1, i)
        clock.advance(10)
        callwatch.flush()
        callwatch.shutdown()
    for i, h in enumerate(handlers):
        base = f"{prefix}.h_w0.handler.{h}"
        got = graphite.wait_for(f"{base}.requests", t0 - 10, t0 + 20, lambda p: t0 in p)
        assert got[t0] == i + 1, h
        if i:
            cpr = graphite.wait_for(f"{base}.watch.Storage_get_player.calls_per_request.mean", t0 - 10, t0 + 20,
                                    lambda p: t0 in p)
            assert cpr == {t0: float(i)}, h
    total = graphite.wait_for(f"sumSeries({prefix}.*.handler.*.requests)", t0 - 10, t0 + 20, lambda p: t0 in p)
    assert total[t0] == sum(range(1, 13))
    # consistent hashing really spread the series over both caches
    per_cache = [len(list((d / prefix).rglob("*.wsp"))) if (d / prefix).exists() else 0 for d in dirs]
    assert all(n > 0 for n in per_cache), per_cache
