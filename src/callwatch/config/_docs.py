"""The example file and the reference page, generated from the schema in ``_model``.

``python -m callwatch.config --write-docs`` writes both; tests/test_config_docs.py
regenerates them and fails when the committed copies differ.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

from ._check import default_of, keys_of
from ._model import MAX_WATCHED, PRESET_NAMES, SECTIONS, Config, Key, WatchTarget, has_example
from ._yaml import MAX_BYTES, MAX_DEPTH, MAX_VALUES

EXAMPLE = Path("config/callwatch.example.yaml")
REFERENCE = Path("docs/configuration.md")
REGENERATE = "python -m callwatch.config --write-docs"

_HEADER = f"""\
# callwatch configuration: every key, with its default (or an example value).
# Generated from src/callwatch/config/_model.py by `{REGENERATE}`:
# edit the schema there, not this file. Reference: docs/configuration.md.
# Check a file with:   callwatch check-config config/callwatch.example.yaml
# The watch targets below point at the demo's own modules, so this file checks as-is;
# replace them with your application's modules (myapp.db:..., myapp.cache:...).
"""

# The watch list is the one key whose example is a list of entries.
_WATCH_EXAMPLE = """\
- target: "callwatch.demo.db:Database.get_player"
  name: get_player
  group: db
- target: "callwatch.demo.db:Database.save_*"
  group: db
- target: "callwatch.demo.cache:Cache.get"
  group: cache
# the short form, a target alone:
- "callwatch.demo.cache:Cache.set"
# a preset, with its own group unless given:
- preset: dbapi
# calls only, through sys.monitoring on Python 3.12+:
- target: "callwatch.demo.cache:Cache.delete"
  mode: count
# for code no wrapper can reach: a pattern over profiled functions' names
- target: "sqlite3.Cursor.execute"
  mode: sampled
"""

_PLAIN = re.compile(r"^[A-Za-z0-9_./-]+$")
_YAML_WORDS = {"null", "true", "false", "yes", "no", "on", "off", "~"}


def _value(x: Any) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, (int, float)):
        return repr(x)
    s = str(x)
    if _PLAIN.match(s) and s.lower() not in _YAML_WORDS and not re.match(r"^[\d.]+$", s):
        return s
    return json.dumps(s)


def _comment(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, 92 - len(indent) - 2, initial_indent=indent + "# ", subsequent_indent=indent + "# ",
                         break_on_hyphens=False)


def _key_lines(name: str, k: Key, default: Any, indent: str) -> list[str]:
    if k.example_yaml:
        if k.example_yaml.startswith("{"):
            return [*_comment(k.help, indent), f"{indent}{name}: {k.example_yaml}"]
        body = [indent + "  " + line for line in k.example_yaml.splitlines()]
        return [*_comment(k.help, indent), f"{indent}{name}:", *body]
    value = _value(k.example if has_example(k) else default)
    if k.inline_help:
        return [f"{indent}{name + ': ' + value:<22}  # {k.help}"]
    return [*_comment(k.help, indent), f"{indent}{name}: {value}"]


def _section_help(s: Any) -> str:
    return s.help or " ".join((s.cls.__doc__ or "").split())


def example() -> str:
    out = [_HEADER]
    for s in SECTIONS:
        if s.name == "enabled":
            k = dict(keys_of(Config))["enabled"]
            out += [*_key_lines("enabled", k, default_of(Config, "enabled"), ""), ""]
        elif s.name == "watch":
            out += _comment(s.help, "")
            for n, k in keys_of(WatchTarget):
                out += textwrap.wrap(f"{n}: {k.help}", 90, initial_indent="#   ", subsequent_indent="#     ",
                                     break_on_hyphens=False)
            out += ["watch:", *("  " + line if line else "" for line in _WATCH_EXAMPLE.splitlines()), ""]
        else:
            assert s.cls is not None
            out += [*_comment(_section_help(s), ""), f"{s.name}:"]
            for name, k in keys_of(s.cls):
                out += _key_lines(name, k, default_of(s.cls, name), "  ")
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _type(k: Key, name: str) -> str:
    text = {
        "bool": "true or false", "number": "number > 0", "fraction": "fraction from 0 to 1",
        "seconds": "seconds, 0 or more", "host": "host name or IP address",
        "choice": " or ".join(f"`{c}`" for c in k.choices),
        "int": f"whole number from {k.lo} to {k.hi}" if k.hi is not None else f"whole number, at least {k.lo}",
        "str": f"string of at most {k.max_len:,} characters",
    }.get(k.kind)
    if text is None:
        text = {"rename": "mapping of name to name", "dimensions": "mapping of handler to {dimension: "
                "module.path:function}", "call_budget": "mapping of metric name to count",
                "dump_dir": "directory path", "target": "`module.path:Qualified.name` or a glob",
                "preset": " or ".join(f"`{p}`" for p in PRESET_NAMES)}.get(name, "see below")
    return text + (", or null" if k.nullable else "")


def _row(path: str, k: Key, default: Any) -> str:
    d = "(none)" if path.startswith("watch[].") and default in ("", None) else f"`{_value(default)}`"
    if isinstance(default, dict):
        d = "`{}`"
    cells = [f"`{path}`", _type(k, path.rsplit(".", 1)[-1]), d, k.help + (f" Fix hint: {k.fix}." if k.fix else "")]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def reference() -> str:
    out = ["# Configuration reference", "",
           f"Generated from `src/callwatch/config/_model.py` by `{REGENERATE}` (a test fails when this page "
           "or `config/callwatch.example.yaml` is out of date). Keys are listed in the file's order. "
           "`callwatch check-config FILE` reports every problem of a file at once, sorted by line.", "",
           "## Environment", "",
           "- `CALLWATCH_CONFIG`: the file `configure()` reads when it is given none.",
           "- `CALLWATCH_GRAPHITE=HOST[:PORT]`: overrides `graphite.host` and `graphite.port` "
           "(IPv6: `[::1]:2003`, or a bare address without port such as `::1`).",
           "- `CALLWATCH_DISABLED=1`: callwatch does nothing (`0`/`false`/`no`/`off`: no effect).", "",
           "## Limits", "",
           f"- A file is at most {MAX_BYTES:,} bytes, nests at most {MAX_DEPTH} levels and holds at most "
           f"{MAX_VALUES:,} values once its aliases are expanded (aliases and merge keys `<<: *name` are "
           "supported).",
           f"- At most {MAX_WATCHED:,} functions are watched in all; a target that would pass that cap is "
           "a problem naming the target.",
           "- Python's built-in functions and callwatch's own functions cannot be watched.", ""]
    for s in SECTIONS:
        out += [f"## `{s.name}`", ""]
        if s.name == "enabled":
            k = dict(keys_of(Config))["enabled"]
            rows = [_row("enabled", k, default_of(Config, "enabled"))]
        elif s.name == "watch":
            out += [s.help, ""]
            rows = [_row(f"watch[].{n}", k, default_of(WatchTarget, n)) for n, k in keys_of(WatchTarget)]
        else:
            assert s.cls is not None
            out += [_section_help(s), ""]
            rows = [_row(f"{s.name}.{n}", k, default_of(s.cls, n)) for n, k in keys_of(s.cls)]
        out += ["| key | type | default | what it does |", "|---|---|---|---|", *rows, ""]
    return "\n".join(out).rstrip("\n") + "\n"


def write(root: Path) -> list[Path]:
    written = []
    for rel, text in ((EXAMPLE, example()), (REFERENCE, reference())):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
