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
#: each hostile name as one path component, written out by hand (at most 120 characters;
#: an empty handler name is "_unnamed", an empty dimension name or value "_")
AS_HANDLER = ["login_evil_metric_1_0", "a_b_c", "dots_in_name", "______etc_passwd", "_n_c_d___", "x" * 120,
              "semi_colon_tag", "tab_here", "_unnamed", "GET__users_42"]
AS_DIMENSION = AS_HANDLER[:8] + ["_"] + AS_HANDLER[9:]


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
    expected = set()
    for h in AS_HANDLER:
        base = f"{prefix}.h_w0.handler.{h}"
        expected |= {f"{base}.requests", f"{base}.errors"} | {f"{base}.response_ms.{s}" for s in
                                                               ("mean", "max", "p50", "p90", "p99")}
    for h, n in zip(AS_HANDLER, AS_DIMENSION):
        d = f"{prefix}.h_w0.handler.{h}.by.{n}.{n}"
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


# --------------------------------------------------------------------------------------
# Config bombs (issue 11 #3, #10): load and prepare raise ConfigError and nothing else,
# quickly and in bounded memory.  Each runs in a subprocess with a memory cap and a
# timeout, so a regression fails the test instead of taking the machine down.

_LOAD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
sys.path.insert(0, sys.argv[2])
from callwatch.config import ConfigError, prepare
t0 = time.perf_counter()
try:
    prepare(sys.argv[1], env={})
    out = {"ok": True}
except ConfigError as e:
    out = {"problems": [str(p) for p in e.problems]}
out["seconds"] = time.perf_counter() - t0
print(json.dumps(out))
"""
TESTS = Path(__file__).resolve().parent


def prepare_in_subprocess(tmp_path: Path, text: str) -> tuple[list[str], float]:
    import subprocess
    import sys

    p = tmp_path / "bomb.yaml"
    p.write_text(text, encoding="utf-8")
    r = subprocess.run([sys.executable, "-c", _LOAD, str(p), str(TESTS)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    return [x.replace(str(p), "F") for x in out.get("problems", [])], out["seconds"]


def test_a_recursive_alias_is_a_located_problem(tmp_path: Path) -> None:
    problems, _ = prepare_in_subprocess(tmp_path, "watch: &a [*a]\n")
    assert problems == ["F:1: watch: an alias refers to the value that contains it (a recursive alias). Fix: point "
                        "the alias at a value defined before it, or write the value out"]


def test_deep_nesting_is_a_located_problem(tmp_path: Path) -> None:
    problems, _ = prepare_in_subprocess(tmp_path, "graphite: {}\nwatch: " + "[" * 5000 + "]" * 5000 + "\n")
    assert problems == ["F:2: the values nest more than 50 levels deep. Fix: a callwatch configuration needs a few "
                        "levels: flatten it"]
    block = "".join("  " * i + "a:\n" for i in range(200)) + "  " * 200 + "b: 1\n"
    problems, _ = prepare_in_subprocess(tmp_path, block)
    assert problems == ["F:51: the values nest more than 50 levels deep. Fix: a callwatch configuration needs a few "
                        "levels: flatten it"]


def test_a_5000_digit_number_is_a_located_problem(tmp_path: Path) -> None:
    problems, _ = prepare_in_subprocess(tmp_path, "graphite:\n  host: h\n  port: 1" + "0" * 5000 + "\n")
    assert len(problems) == 1
    assert problems[0].startswith("F:3: graphite.port: the value cannot be read (Exceeds the limit (4300 digits)")
    assert problems[0].endswith(". Fix: write a shorter plain value")


def test_billion_laughs_stops_at_the_value_cap_in_bounded_time(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):  # 10**9 leaves once expanded, in about 400 bytes
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    lines.append("watch: *a8")
    text = "\n".join(lines) + "\n"
    assert len(text) < 500
    problems, seconds = prepare_in_subprocess(tmp_path, text)
    assert problems == ["F:5: a4: the file holds more than 100,000 values once its aliases are expanded. Fix: write "
                        "a smaller configuration (aliases that repeat aliases multiply)"]
    assert seconds < 5


def test_a_module_that_exits_on_import_is_a_located_problem(tmp_path: Path) -> None:
    problems, _ = prepare_in_subprocess(tmp_path, "watch:\n  - cwsample.exits:f\n")
    assert problems == ["F:2: target: importing 'cwsample.exits' called sys.exit(3). Fix: watch functions of a module "
                        "that can be imported without exiting (move the exit under 'if __name__ == \"__main__\":')"]


@pytest.mark.parametrize("target, message", [
    ("builtins:len", "'builtins:len' is one of Python's built-in functions, which callwatch itself calls while it "
     "records and flushes: watching it would count callwatch and can recurse. Fix: watch the function of your "
     "application that calls it"),
    ("callwatch.export:sanitize", "'callwatch.export:sanitize' is part of callwatch itself, which cannot watch its "
     "own functions. Fix: watch a function of your application"),
    ("callwatch._core:*", "'callwatch._core:*' is part of callwatch itself, which cannot watch its own functions. "
     "Fix: watch a function of your application"),
])
def test_builtins_and_callwatch_itself_are_refused(tmp_path: Path, target: str, message: str) -> None:
    # In a subprocess: were len() patched, this process would recurse in every flush.
    import subprocess
    import sys

    p = tmp_path / "cw.yaml"
    p.write_text(f"watch:\n  - \"{target}\"\n")
    code = ("import sys, callwatch\n"
            "try:\n    callwatch.configure(sys.argv[1], start_thread=False, strict=True)\n"
            "except callwatch.ConfigError as e:\n    print(e)\n    sys.exit(0)\n"
            "print('configured'); callwatch.flush(); callwatch.shutdown()\n")
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout) == (0, f"{p}:2: target: {message}\n"), r.stderr[-1000:]


def test_200k_unknown_keys_are_reported_quickly_and_capped() -> None:
    doc = {f"k{i}": 1 for i in range(200_000)}
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as ei:
        load(doc, env={})
    assert time.perf_counter() - t0 < 5
    assert len(ei.value.problems) == 21
    assert str(ei.value.problems[0]) == ("<dict>: k0: unknown key 'k0'. Fix: remove it, or known keys are enabled, "
                                         "graphite, naming, watch, handlers, profile, memory, spikes, alerts")
    assert str(ei.value.problems[-1]) == ("<dict>: 199,980 more unknown keys. Fix: remove them; the known keys are "
                                          "enabled, graphite, naming, watch, handlers, profile, memory, spikes, alerts")


def test_60k_unknown_keys_in_a_file_are_reported_quickly(tmp_path: Path) -> None:
    problems, seconds = prepare_in_subprocess(tmp_path, "".join(f"k{i}: 1\n" for i in range(60_000)))
    assert len(problems) == 21 and problems[1].startswith("F:1: 59,980 more unknown keys.")
    assert seconds < 10


def test_a_huge_file_or_prefix_is_refused_with_its_size(tmp_path: Path) -> None:
    big = "x" * 5_000_000
    with pytest.raises(ConfigError) as ei:
        load({"graphite": {"prefix": big}}, env={})
    assert str(ei.value) == ("<dict>: graphite.prefix: the value is 5,000,000 characters long; at most 200 are "
                             "allowed. Fix: use letters, digits, '_' and '-', with '.' between parts, e.g. prefix: "
                             "myapp.callwatch")
    p = tmp_path / "big.yaml"
    p.write_text(f"graphite:\n  prefix: {big}\n")
    with pytest.raises(ConfigError) as ei:
        load(p, env={})
    assert str(ei.value) == (f"{p}: the file is 5,000,021 bytes; a configuration is at most 1,000,000. Fix: check "
                             "that this is the configuration file")


def test_a_self_referencing_dict_is_a_config_error() -> None:
    doc: dict[str, object] = {}
    doc["graphite"] = doc
    with pytest.raises(ConfigError) as ei:
        load(doc, env={})
    assert str(ei.value) == ("<dict>: the values nest more than 50 levels deep (or refer to themselves). "
                             "Fix: pass a plain configuration dict")


def test_a_glob_over_10000_functions_is_refused_quickly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from callwatch.config import prepare

    (tmp_path / "cwmany.py").write_text("".join(f"def f{i}():\n    return {i}\n" for i in range(10_000)))
    monkeypatch.syspath_prepend(str(tmp_path))
    p = tmp_path / "cw.yaml"
    p.write_text("watch:\n  - cwsample.storage:get_user\n  - cwmany:f*\n")
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as ei:
        prepare(p, env={})
    assert time.perf_counter() - t0 < 10
    assert str(ei.value) == (f"{p}:3: target: 'cwmany:f*' matches 10,000 more function(s), which makes more than "
                             "1,000 watched in all. Fix: narrow the pattern (e.g. 'Class.get_*') or list the "
                             "functions you need: callwatch watches at most 1,000, as each adds series per handler "
                             "and work per flush")


def test_a_bracketed_ipv6_graphite_host_sends_to_loopback(tmp_path: Path) -> None:
    import socket
    import socketserver
    import threading

    from callwatch.testing import FakeClock

    received: list[bytes] = []

    class Collect(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data = b""
            while chunk := self.request.recv(65536):
                data += chunk
            received.append(data)

    class V6(socketserver.ThreadingTCPServer):
        address_family = socket.AF_INET6
        daemon_threads = True

    srv = V6(("::1", 0), Collect)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        p = tmp_path / "cw.yaml"
        p.write_text(f"graphite:\n  host: \"[::1]\"\n  port: {srv.server_address[1]}\n  prefix: v6\n"
                     "naming: {host: h, worker: none}\nspikes: {enabled: false}\n")
        clock = FakeClock(1_700_000_000)
        with clock:
            rt = callwatch.configure(p, clock=clock, start_thread=False, strict=True)
            assert rt is not None and rt.config.graphite.host == "::1"
            with callwatch.request("login"):
                pass
            clock.advance(10)
            callwatch.flush()
            callwatch.shutdown()
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert b"v6.h.handler.login.requests 1 1700000000\n" in b"".join(received)
    finally:
        srv.shutdown()
        srv.server_close()
