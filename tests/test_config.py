"""Config loading: every mistake gives one located message with a fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from callwatch import config
from callwatch.config import ConfigError, load

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cw.yaml"
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


def errors(tmp_path: Path, text: str) -> list[str]:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load(p, env={})
    return [str(x).replace(str(p), "F") for x in ei.value.problems]


def test_defaults() -> None:
    cfg = load(None, env={})
    assert cfg.enabled is True
    assert cfg.graphite == config.GraphiteConfig()
    assert cfg.graphite.interval == 10 and cfg.graphite.host is None
    assert cfg.host == config.short_hostname()
    assert cfg.handlers.max_handlers == 200


def test_the_example_config_is_valid_and_complete() -> None:
    cfg = load(ROOT / "config" / "callwatch.example.yaml", env={})
    assert cfg.graphite.host == "127.0.0.1"
    assert cfg.graphite.port == 2003
    assert len(cfg.watch) >= 3
    text = (ROOT / "config" / "callwatch.example.yaml").read_text()
    for key in (config.GRAPHITE_KEYS + config.TOP_KEYS + config.WATCH_KEYS + config.HANDLERS_KEYS
                + config.PROFILE_KEYS + config.NAMING_KEYS + config.SPIKES_KEYS + config.ALERTS_KEYS):
        assert f"{key}:" in text, f"the example does not show {key}"


def test_full_config(tmp_path: Path) -> None:
    p = write(tmp_path, """
        graphite:
          host: carbon.example
          port: 2013
          protocol: udp
          prefix: app.cw
          interval: 30
          tags: true
          timeout: 0.5
          max_buffered_points: 5000
        naming:
          host: web-1.prod
        watch:
          - myapp.db:get_user
          - target: "myapp.db:*.get_*"
            group: db
          - {target: myapp.cache:Redis.get, name: redis_get, group: redis}
        handlers:
          rename: {"GET /users/<id>": users_show}
          max_handlers: 50
        """)
    cfg = load(p, env={})
    assert cfg.graphite == config.GraphiteConfig("carbon.example", 2013, "udp", "app.cw", 30, True, 0.5, 5000)
    assert cfg.host == "web-1_prod"
    assert [(w.target, w.name, w.group, w.where) for w in cfg.watch] == [
        ("myapp.db:get_user", None, None, f"{p}:13"),
        ("myapp.db:*.get_*", None, "db", f"{p}:14"),
        ("myapp.cache:Redis.get", "redis_get", "redis", f"{p}:16"),
    ]
    assert cfg.watch[1].is_glob and not cfg.watch[0].is_glob
    assert cfg.handlers.rename == {"GET /users/<id>": "users_show"} and cfg.handlers.max_handlers == 50


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    assert errors(tmp_path, """
        graphite:
          intervall: 5
        """) == ["F:2: graphite.intervall: unknown key 'intervall'. Fix: remove it, or did you mean 'interval'?"]


def test_unknown_top_level_key(tmp_path: Path) -> None:
    assert errors(tmp_path, "wach: []\n") == [
        "F:1: wach: unknown key 'wach'. Fix: remove it, or did you mean 'watch'?"]


@pytest.mark.parametrize("value, message", [
    ("abc", "expected a whole number, got 'abc'"),
    ("0", "expected a number from 1 to 65535, got 0"),
    ("70000", "expected a number from 1 to 65535, got 70000"),
    ("true", "expected a whole number, got True"),
])
def test_bad_port(tmp_path: Path, value: str, message: str) -> None:
    assert errors(tmp_path, f"graphite:\n  host: h\n  port: {value}\n") == [
        f"F:3: graphite.port: {message}. Fix: use carbon's plaintext port, e.g. port: 2003"]


@pytest.mark.parametrize("value, message", [
    ("0", "expected a number from 1 to 86400, got 0"),
    ("-5", "expected a number from 1 to 86400, got -5"),
    ("2.5", "expected a whole number, got 2.5"),
    ("ten", "expected a whole number, got 'ten'"),
])
def test_bad_interval(tmp_path: Path, value: str, message: str) -> None:
    (line,) = errors(tmp_path, f"graphite:\n  interval: {value}\n")
    assert line.startswith(f"F:2: graphite.interval: {message}. Fix: give whole seconds, at least 1")


def test_wrong_types(tmp_path: Path) -> None:
    assert errors(tmp_path, """
        enabled: maybe
        graphite: [1, 2]
        watch: {a: b}
        handlers:
          max_handlers: many
          rename: [x]
        """) == [
        "F:1: enabled: expected true or false, got 'maybe'. Fix: write 'enabled: true' or 'enabled: false'",
        "F:2: graphite: expected a mapping of keys (host, port, protocol, prefix, interval, tags, timeout, "
        "max_buffered_points, web_url), got a list. Fix: write it as 'graphite:' followed by indented 'key: value' lines",
        "F:3: watch: expected a list of targets, got a mapping. Fix: write each target on its own line starting with '- '",
        "F:5: handlers.max_handlers: expected a whole number, got 'many'. Fix: give a count, e.g. max_handlers: 200",
        "F:6: handlers.rename: expected a mapping of old name to new name, got a list. "
        "Fix: write e.g. 'rename: {\"GET /users/<id>\": users_show}'",
    ]


def test_bad_protocol_timeout_prefix(tmp_path: Path) -> None:
    got = errors(tmp_path, """
        graphite:
          protocol: http
          timeout: 0
          prefix: "a..b"
        """)
    assert got == [
        "F:2: graphite.protocol: expected tcp or udp, got 'http'. Fix: write 'protocol: tcp' (or udp)",
        "F:3: graphite.timeout: expected a number greater than 0, got 0. Fix: give seconds, e.g. timeout: 2.0",
        "F:4: graphite.prefix: 'a..b' is not allowed here. Fix: use letters, digits, '_' and '-', with '.' "
        "between parts, e.g. prefix: myapp.callwatch",
    ]


def test_bad_watch_entries(tmp_path: Path) -> None:
    got = errors(tmp_path, """
        watch:
          - "no colon here"
          - {name: x}
          - {target: "m:*.get_*", name: x}
          - {target: "m:f", group: "has space"}
          - 42
        """)
    assert got == [
        "F:2: watch[0].target: 'no colon here' is not of the form 'module.path:Qualified.name'. Fix: write e.g. "
        "'myapp.storage:Storage.get_user' or a glob like 'myapp.storage:*.get_*'",
        "F:3: watch[1]: missing 'target' (or 'preset'). Fix: add e.g. 'target: myapp.db:get_user' or 'preset: redis'",
        "F:4: watch[2].name: 'name' cannot be used with a glob target (it matches many functions). "
        "Fix: remove 'name', or list the functions one by one",
        "F:5: watch[3].group: 'has space' is not allowed here. Fix: use letters, digits, '_' and '-', e.g. group: db",
        "F:6: watch[4]: expected a target string or a mapping, got 42. "
        "Fix: write '- myapp.db:get_user', '- {target: myapp.db:get_user, group: db}' or '- {preset: redis}'",
    ]


def test_presets(tmp_path: Path) -> None:
    p = write(tmp_path, """
        watch:
          - preset: redis
          - {preset: dbapi, group: sql}
        """)
    assert [(w.preset, w.group, w.where) for w in load(p, env={}).watch] == [
        ("redis", None, f"{p}:2"), ("dbapi", "sql", f"{p}:3")]
    assert errors(tmp_path, """
        watch:
          - preset: rediss
          - {preset: dbapi, target: "a:b"}
        """) == [
        "F:2: watch[0].preset: unknown preset 'rediss'. Fix: did you mean 'redis'?",
        "F:3: watch[1].target: 'target' cannot be used with 'preset'. "
        "Fix: give the preset alone (and optionally its group), or a target",
    ]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    got = errors(tmp_path, """
        graphite:
          host: a
         port: 3
        """)
    assert len(got) == 1
    assert got[0].startswith("F:3: YAML syntax error:")
    assert got[0].endswith("Fix: fix the YAML at that line (indentation, a missing ':' or quote)")


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    assert errors(tmp_path, "graphite:\n  port: 1\n  port: 2\n") == [
        "F:3: graphite.port: key 'port' appears twice (first on line 2). Fix: keep one of them"]


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as ei:
        load("/nonexistent/cw.yaml", env={})
    assert str(ei.value) == ("/nonexistent/cw.yaml: file not found. "
                             "Fix: check the path, or set CALLWATCH_CONFIG to the right file")


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, "\n"), env={}).graphite == config.GraphiteConfig()


def test_dict_input_names_the_key() -> None:
    with pytest.raises(ConfigError) as ei:
        load({"graphite": {"port": "x"}}, env={})
    assert str(ei.value) == ("<dict>: graphite.port: expected a whole number, got 'x'. "
                             "Fix: use carbon's plaintext port, e.g. port: 2003")


def test_environment_overrides(tmp_path: Path) -> None:
    p = write(tmp_path, "graphite: {host: a, port: 1}\n")
    cfg = load(None, env={"CALLWATCH_CONFIG": str(p), "CALLWATCH_GRAPHITE": "10.0.0.9:2103"})
    assert (cfg.graphite.host, cfg.graphite.port) == ("10.0.0.9", 2103)
    assert load(p, env={"CALLWATCH_GRAPHITE": "[::1]:2004"}).graphite.host == "::1"
    assert load(p, env={"CALLWATCH_GRAPHITE": "carbon"}).graphite.port == 1
    assert load(p, env={"CALLWATCH_DISABLED": "1"}).enabled is False
    assert load(p, env={"CALLWATCH_DISABLED": "0"}).enabled is True
    with pytest.raises(ConfigError) as ei:
        load(p, env={"CALLWATCH_GRAPHITE": "h:99999", "CALLWATCH_DISABLED": "perhaps"})
    assert str(ei.value).splitlines() == [
        "environment variable CALLWATCH_DISABLED: 'perhaps' is not a switch. "
        "Fix: set CALLWATCH_DISABLED=1 to turn callwatch off, or unset it",
        "environment variable CALLWATCH_GRAPHITE: 'h:99999' is not HOST[:PORT] (the port is not a number from 1 "
        "to 65535). Fix: set e.g. CALLWATCH_GRAPHITE=127.0.0.1:2003, or [::1]:2003 for IPv6",
    ]


def test_control_characters_are_a_located_error(tmp_path: Path) -> None:
    assert errors(tmp_path, "graphite:\n  host: a\x1f\n") == [
        "F:2: character '\\x1f' is not allowed in YAML. "
        "Fix: remove the control character (the file is not plain text there)"]


def test_timeout_must_stay_under_the_interval(tmp_path: Path) -> None:
    assert load(write(tmp_path, "graphite: {interval: 1}\n"), env={}).graphite.timeout == 0.5
    assert load(write(tmp_path, "graphite: {interval: 10}\n"), env={}).graphite.timeout == 2.0
    assert errors(tmp_path, "graphite:\n  interval: 2\n  timeout: 3\n") == [
        "F:3: graphite.timeout: 3 s is not less than the interval (2 s), so one stuck send could hold up the "
        "next flush. Fix: use a timeout under 2 s, e.g. timeout: 0.5"]
