"""The example file and the reference page are generated from the one schema (issue 10 §4)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import yaml

from callwatch.config import Config, WatchTarget, load
from callwatch.config._model import SECTIONS
from callwatch.config._docs import example, reference

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "callwatch.example.yaml"
REFERENCE = ROOT / "docs" / "configuration.md"


def test_the_committed_example_and_reference_are_up_to_date() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") == example(), \
        "config/callwatch.example.yaml is out of date: run python -m callwatch.config --write-docs"
    assert REFERENCE.read_text(encoding="utf-8") == reference(), \
        "docs/configuration.md is out of date: run python -m callwatch.config --write-docs"


def test_the_write_docs_command_writes_both_files(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "callwatch.config", "--write-docs", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "config" / "callwatch.example.yaml").read_text() == EXAMPLE.read_text()
    assert (tmp_path / "docs" / "configuration.md").read_text() == REFERENCE.read_text()


def _schema_keys() -> list[str]:
    out = []
    for s in SECTIONS:
        if s.cls is None:
            if s.name == "watch":
                out += [f"watch[].{f.name}" for f in dataclasses.fields(WatchTarget) if "key" in f.metadata]
            else:
                out.append(s.name)
        else:
            out += [f"{s.name}.{f.name}" for f in dataclasses.fields(s.cls) if "key" in f.metadata]
    return out


def test_every_key_is_in_the_example_and_the_reference_in_file_order() -> None:
    keys = _schema_keys()
    assert "graphite.port" in keys and "alerts.webhook" in keys and "watch[].mode" in keys
    assert len(keys) == 1 + 9 + 3 + 5 + 4 + 10 + 6 + 5 + 9  # enabled, graphite ... profile, memory, spikes, alerts
    doc = yaml.safe_load(EXAMPLE.read_text())
    for k in keys:
        section, _, name = k.partition(".")
        if section == "watch[]":
            assert any(name in (e if isinstance(e, dict) else {"target": e}) for e in doc["watch"]) \
                or f"#   {name}:" in EXAMPLE.read_text(), k
        elif name:
            assert name in doc[section], k
        else:
            assert section in doc, k
    ref = REFERENCE.read_text()
    positions = [ref.index(f"| `{k}` |") for k in keys]
    assert positions == sorted(positions)


def test_the_example_loads_with_the_documented_defaults() -> None:
    cfg = load(EXAMPLE, env={})
    defaults = Config()
    assert cfg.graphite.port == 2003 and cfg.graphite.host == "127.0.0.1"  # host: an example, not the default
    assert cfg.spikes == defaults.spikes and cfg.alerts == defaults.alerts
    assert cfg.handlers.max_handlers == 200 and cfg.profile is not None and cfg.profile.top == 10
