"""Hostile and bad input: fuzzed configs, names that try to inject metrics, endless names."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import callwatch
from callwatch import _core, _targets
from callwatch.config import (ALERTS_KEYS, GRAPHITE_KEYS, HANDLERS_KEYS, NAMING_KEYS, PROFILE_KEYS, SPIKES_KEYS,
                              TOP_KEYS, WATCH_KEYS, ConfigError, load)
from callwatch.export import sanitize
from callwatch.testing import FakeClock

from conftest import Graphite

KEYS = sorted(set(TOP_KEYS + GRAPHITE_KEYS + NAMING_KEYS + WATCH_KEYS + HANDLERS_KEYS + PROFILE_KEYS
                  + SPIKES_KEYS + ALERTS_KEYS)) + ["intervall", "x"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["tcp", "udp", "auto", "none", "sampled", "redis", "dbapi",
                                           "cwsample.storage:get_user", "cwsample.storage:*.get_*",
                                           "cwfuzz_nomodule.x:f", "cwsample.storage:nope", "127.0.0.1",
                                           "10min", "http://127.0.0.1:1"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5)),
    max_leaves=20)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=documents)
def test_fuzzed_configs_load_or_fail_with_a_location(doc: dict[str, object], tmp_path: Path) -> None:
    path = tmp_path / "fuzz.yaml"
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    path.write_text(text, encoding="utf-8")
    try:
        cfg = load(path, env={})
    except ConfigError as e:
        assert e.problems
        for p in e.problems:
            assert p.where.startswith(str(path)), p
            assert str(p).startswith(str(path))
        return
    resolved, problems = _targets.resolve(cfg.watch)  # never raises either
    for p in problems:
        assert p.where.startswith(str(path)), p


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_fuzzed_yaml_text(text: str, tmp_path: Path) -> None:
    path = tmp_path / "raw.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load(path, env={})
    except ConfigError as e:
        assert all(p.where.startswith(str(path)) for p in e.problems)


HOSTILE = ["login\nevil.metric 1 0", "a b c", "dots.in.name", "../../etc/passwd", "ünïcødé ☃", "x" * 10_000,
           "semi;colon=tag", "tab\there", "", "GET /users/42"]


@pytest.mark.graphite
def test_hostile_names_create_only_the_expected_series(graphite: Graphite) -> None:
    prefix = "hx" + uuid.uuid4().hex[:8]
    t0 = (int(time.time()) - 300) // 10 * 10
    clock = FakeClock(t0)
    with clock:
        callwatch.configure({"graphite": {"host": "127.0.0.1", "port": graphite.line_port, "prefix": prefix,
                                          "interval": 10}, "naming": {"host": "h"}, "spikes": {"enabled": False}},
                            clock=clock, start_thread=False, strict=True)
        for name in HOSTILE:
            with callwatch.request(name):
                callwatch.dimension(name, name)
        clock.advance(10)
        callwatch.flush()
        callwatch.shutdown()
    handlers = {sanitize(n) for n in HOSTILE}
    expected = set()
    for h in handlers:
        base = f"{prefix}.h_w0.handler.{h}"
        expected |= {f"{base}.requests", f"{base}.errors"} | {f"{base}.response_ms.{s}" for s in
                                                               ("mean", "max", "p50", "p90", "p99")}
    for n in HOSTILE:
        d = f"{prefix}.h_w0.handler.{sanitize(n)}.by.{sanitize(n)}.{sanitize(n)}"
        expected |= {f"{d}.requests", f"{d}.errors"} | {f"{d}.response_ms.{s}" for s in
                                                         ("mean", "max", "p50", "p90", "p99")}
    expected |= {f"{prefix}.h_w0.callwatch.{m}" for m in ("points_sent", "points_dropped", "send_errors",
                                                          "points_buffered", "flush_ms", "internal_errors",
                                                          "spikes_active")}
    deadline = time.monotonic() + 20
    while True:
        with urllib.request.urlopen(f"{graphite.web_url}/metrics/index.json", timeout=10) as r:
            found = {m for m in json.loads(r.read()) if m.startswith(prefix + ".")}
        if found >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert found == expected
    assert not any("evil" in m for m in found if ".handler.login_evil" not in m)


def test_endless_unique_names_stay_capped() -> None:
    callwatch.configure({"handlers": {"max_handlers": 50, "max_dimension_values": 10}}, start_thread=False,
                        strict=True)

    @callwatch.watch(name="w")
    def w() -> None:
        pass

    for i in range(20_000):
        with callwatch.request(f"GET /users/{i}"):
            callwatch.dimension("user", i)
            w()
    snap = _core.collector.swap(0)
    plain = [k for k in snap.handlers if isinstance(k, str)]
    split = [k for k in snap.handlers if not isinstance(k, str)]
    assert len(plain) == 50 + 1 and "_other" in plain  # 50 names, then _other
    assert sum(hs.requests for k, hs in snap.handlers.items() if isinstance(k, str)) == 20_000
    per_handler: dict[str, int] = {}
    for h, _, _ in split:  # type: ignore[misc]
        per_handler[h] = per_handler.get(h, 0) + 1
    assert max(per_handler.values()) <= 10 + 1
    assert len(split) <= 51 * 11
