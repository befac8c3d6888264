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


# --------------------------------------------------------------------------------------
# Exact messages for the sections that had none (issue 10 §4)


def test_spikes_section_messages(tmp_path: Path) -> None:
    assert errors(tmp_path, """
        spikes:
          enabled: sometimes
          factor: -2
          floor: "3"
          baseline_intervals: 2
          min_requests: 0
          windw: 3
        """) == [
        "F:2: spikes.enabled: expected true or false, got 'sometimes'. Fix: write 'enabled: true' or 'enabled: false'",
        "F:3: spikes.factor: expected a number greater than 0, got -2. Fix: give a factor above 1, e.g. factor: 2",
        "F:4: spikes.floor: expected a number greater than 0, got '3'. Fix: give calls per request, e.g. floor: 3",
        "F:5: spikes.baseline_intervals: expected a number from 3 to 100000, got 2. Fix: give a count of intervals, "
        "e.g. baseline_intervals: 30",
        "F:6: spikes.min_requests: expected a number of at least 1, got 0. Fix: give a count, e.g. min_requests: 5",
        "F:7: spikes.windw: unknown key 'windw'. Fix: remove it, or known keys are enabled, factor, floor, "
        "baseline_intervals, min_requests",
    ]


def test_alerts_section_messages(tmp_path: Path) -> None:
    assert errors(tmp_path, """
        alerts:
          window: 10 minutes
          baseline: 1w
          spike_critical: .nan
          p99_warning_ms: 0
          webhook: ftp://example
        """) == [
        "F:2: alerts.window: '10 minutes' is not allowed here. Fix: give a Graphite period, e.g. window: 10min",
        "F:3: alerts.baseline: '1w' is not allowed here. Fix: give a Graphite period, e.g. baseline: 1h",
        "F:4: alerts.spike_critical: expected a number greater than 0, got nan. Fix: give a factor, e.g. 4",
        "F:5: alerts.p99_warning_ms: expected a number greater than 0, got 0. Fix: give ms, e.g. 500",
        "F:6: alerts.webhook: 'ftp://example' is not allowed here. Fix: give a URL, e.g. webhook: "
        "https://hooks.example/alerts",
    ]
    cfg = load(write(tmp_path, "alerts: {window: 5min, webhook: null}\n"), env={})
    assert (cfg.alerts.window, cfg.alerts.webhook, cfg.alerts.baseline) == ("5min", None, "1h")


def test_naming_section_messages(tmp_path: Path) -> None:
    assert errors(tmp_path, """
        naming:
          host: "web 1"
          worker: each
          slot_dir: 7
        """) == [
        "F:2: naming.host: 'web 1' is not allowed here. Fix: use letters, digits, '_', '-' (dots become '_'), "
        "'auto' for the short host name, or \"\" to leave the host out",
        "F:3: naming.worker: expected auto or none, got 'each'. Fix: write 'worker: auto' (each process sends "
        "under its own slot, e.g. web1_w0) or 'worker: none' (one process per host and prefix)",
        "F:4: naming.slot_dir: expected a string, got 7. Fix: give a directory path, e.g. slot_dir: "
        "/run/myapp/callwatch",
    ]
    cfg = load(write(tmp_path, "naming: {host: '', worker: none, slot_dir: /tmp/s}\n"), env={})
    assert (cfg.host, cfg.worker, cfg.slot_dir) == ("", "none", "/tmp/s")


def test_watch_mode_messages(tmp_path: Path) -> None:
    assert errors(tmp_path, """
        watch:
          - {target: "m:f", mode: fast}
          - {target: "sqlite3.Cursor.execute", mode: sampled}
        """) == [
        "F:2: watch[0].mode: expected wrap, count or sampled, got 'fast'. Fix: write 'mode: count' (calls only), "
        "'mode: sampled' (a pattern over profiled functions), or leave it out",
        "F:3: mode: 'mode: sampled' reads the sampled profiles, but there is no profile section. "
        "Fix: add 'profile: {rate: 0.01}'",
    ]


def test_profile_messages_and_an_unwritable_dump_dir(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    assert errors(tmp_path, f"""
        profile:
          rate: 2
          min_interval: -1
          top: 0
          dump_dir: {tmp_path}/afile/dumps
          call_budget: {{get_user: many}}
        """) == [
        "F:2: profile.rate: expected a fraction from 0 to 1, got 2. Fix: write e.g. 'rate: 0.01' (1 %)",
        "F:3: profile.min_interval: expected seconds (0 or more), got -1. Fix: write e.g. 'min_interval: 60' "
        "(0 turns it off)",
        "F:4: profile.top: expected a number from 1 to 1000, got 0. Fix: give a count, e.g. top: 10",
        f"F:5: profile.dump_dir: '{tmp_path}/afile/dumps' is not a directory this process can write "
        f"({tmp_path}/afile is not a directory). Fix: create it and let the application's user write to it, or "
        "choose another directory, e.g. dump_dir: /var/tmp/callwatch-profiles",
        "F:6: profile.call_budget.get_user: expected a whole number, got 'many'. Fix: give the most calls per "
        "request that is normal, e.g. 5",
    ]
    cfg = load(write(tmp_path, f"profile: {{dump_dir: {tmp_path}/new/dumps}}\n"), env={})
    assert cfg.profile is not None and cfg.profile.dump_dir == f"{tmp_path}/new/dumps"
    assert not (tmp_path / "new").exists()  # checking creates nothing


# --------------------------------------------------------------------------------------
# Hosts, IPv6 and the environment (issue 11 #10)


@pytest.mark.parametrize("written, host", [
    ('"[::1]"', "::1"), ('"::1"', "::1"), ("127.0.0.1", "127.0.0.1"), ("carbon.example.", "carbon.example."),
    ("fe80::1", "fe80::1"),
])
def test_graphite_host_is_normalized(tmp_path: Path, written: str, host: str) -> None:
    assert load(write(tmp_path, f"graphite:\n  host: {written}\n"), env={}).graphite.host == host


def test_a_host_with_a_port_or_junk_is_refused(tmp_path: Path) -> None:
    fix = "Fix: give a host name or IP address, e.g. host: 127.0.0.1 (null: send nothing); the port goes in 'port:'"
    assert errors(tmp_path, "graphite:\n  host: carbon:2003\n") == [
        f"F:2: graphite.host: 'carbon:2003' is not a host name or IP address. {fix}"]
    assert errors(tmp_path, "graphite:\n  host: \"[carbon]\"\n") == [
        f"F:2: graphite.host: '[carbon]' is not a host name or IP address. {fix}"]


@pytest.mark.parametrize("value, host, port", [
    ("[::1]:2004", "::1", 2004), ("[::1]", "::1", 1), ("::1", "::1", 1), ("fe80::2", "fe80::2", 1),
    ("carbon", "carbon", 1), ("carbon:2005", "carbon", 2005), ("10.0.0.1:7", "10.0.0.1", 7),
])
def test_callwatch_graphite_parses_ipv6(tmp_path: Path, value: str, host: str, port: int) -> None:
    p = write(tmp_path, "graphite: {host: a, port: 1}\n")
    g = load(p, env={"CALLWATCH_GRAPHITE": value}).graphite
    assert (g.host, g.port) == (host, port)


def test_callwatch_graphite_with_an_ambiguous_ipv6_port_is_refused() -> None:
    with pytest.raises(ConfigError) as ei:
        load(None, env={"CALLWATCH_GRAPHITE": "::1:2003"})
    assert str(ei.value) == ("environment variable CALLWATCH_GRAPHITE: '::1:2003' is not HOST[:PORT] (ambiguous: an "
                             "IPv6 address, or one with a port? Write [ADDRESS]:PORT). Fix: set e.g. "
                             "CALLWATCH_GRAPHITE=127.0.0.1:2003, or [::1]:2003 for IPv6")


def test_callwatch_disabled_uses_the_one_switch_parser() -> None:
    for value, enabled in (("yes", False), ("ON", False), ("off", True), ("", True), (" 1 ", False)):
        assert load(None, env={"CALLWATCH_DISABLED": value}).enabled is enabled, value


# --------------------------------------------------------------------------------------
# YAML merge keys, and all problems of a file in one run


def test_merge_keys_are_supported_and_written_keys_win(tmp_path: Path) -> None:
    p = write(tmp_path, """
        graphite: &g
          <<: {interval: 30, port: 2004}
          port: 2005
        spikes:
          <<: [{factor: 3}, {factor: 4, floor: 5}]
        """)
    cfg = load(p, env={})
    assert (cfg.graphite.interval, cfg.graphite.port) == (30, 2005)
    assert (cfg.spikes.factor, cfg.spikes.floor) == (3.0, 5.0)


def test_merge_of_a_scalar_is_a_located_problem(tmp_path: Path) -> None:
    assert errors(tmp_path, "graphite:\n  <<: 3\n") == [
        "F:2: graphite: '<<' merges a mapping (or a list of mappings) into this one. Fix: write '<<: *name' where "
        "'&name' marks a mapping"]


def test_prepare_reports_schema_and_target_problems_together_by_line(tmp_path: Path) -> None:
    from callwatch.config import prepare

    p = write(tmp_path, """
        watch:
          - cwsample.storage:get_usr
        graphite:
          port: 0
        handlers:
          dimensions:
            deal: {players: "cwsample.storage:nope"}
        spikes: {factor: 0}
        """)
    with pytest.raises(ConfigError) as ei:
        prepare(p, env={})
    assert [str(x).replace(str(p), "F") for x in ei.value.problems] == [
        "F:2: target: 'cwsample.storage' has no attribute 'get_usr' (from 'cwsample.storage:get_usr'). "
        "Fix: did you mean 'get_user' or 'get_users'?",
        "F:4: graphite.port: expected a number from 1 to 65535, got 0. Fix: use carbon's plaintext port, "
        "e.g. port: 2003",
        "F:7: target: 'cwsample.storage' has no attribute 'nope' (from 'cwsample.storage:nope'). "
        "Fix: check the spelling and the module path",
        "F:8: spikes.factor: expected a number greater than 0, got 0. Fix: give a factor above 1, e.g. factor: 2",
    ]


def test_prepare_returns_what_configure_needs(tmp_path: Path) -> None:
    from callwatch.config import prepare

    p = write(tmp_path, """
        watch:
          - {target: "cwsample.storage:Storage.get_table", group: db}
        handlers:
          dimensions:
            deal: {who: "cwsample.storage:get_user"}
        """)
    import cwsample.storage as st

    prepared = prepare(p, env={})
    assert [(r.qualname, r.name, r.spec.group) for r in prepared.resolved] == [("Storage.get_table",
                                                                                "Storage_get_table", "db")]
    assert prepared.dimensions == {"deal": [("who", st.get_user)]}
    assert prepared.warnings == [] and prepared.config.source == str(p)


def test_load_of_a_disabled_config_resolves_nothing(tmp_path: Path) -> None:
    from callwatch.config import prepare

    prepared = prepare(write(tmp_path, "enabled: false\nwatch: [nosuchmodule:f]\n"), env={})
    assert prepared.config.enabled is False and prepared.resolved == []
