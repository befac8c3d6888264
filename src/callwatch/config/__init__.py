"""Loading and checking the YAML configuration.

Every mistake a user can make becomes a :class:`Problem` that names the file, the line,
the key and the fix; all problems of a file are reported together, sorted by line, as
one :class:`ConfigError`.  The keys are declared once, in ``_model`` (type, default,
range, help, fix); ``python -m callwatch.config --write-docs`` regenerates the example
file and the reference page from them.

``load()`` reads and checks the file and imports nothing of the user's; ``prepare()``
also resolves the ``watch`` targets and dimension functions (importing their modules)
and is what ``configure()`` and ``check-config`` use::

    prepared = prepare("callwatch.yaml")   # raises ConfigError listing every problem
    prepared.config.graphite.port, prepared.resolved, prepared.dimensions
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from ._build import ENV_CONFIG, ENV_DISABLED, ENV_GRAPHITE, TOP_KEYS, apply_env, build
from ._check import Checker, keys_of
from ..errors import ConfigError, Problem
from ._model import (MAX_WATCHED, PRESET_NAMES, SAFE_NAME, AlertsConfig, Config, GraphiteConfig,
                     HandlersConfig, MemoryConfig, NamingConfig, ProfileConfig, SpikesConfig, WatchTarget)
from ._net import parse_host_port, short_hostname
from ._yaml import V, from_plain, read_yaml
from ._prepare import Prepared, prepare

__all__ = [
    "ALERTS_KEYS",
    "ENV_CONFIG",
    "ENV_DISABLED",
    "ENV_GRAPHITE",
    "GRAPHITE_KEYS",
    "HANDLERS_KEYS",
    "MAX_WATCHED",
    "NAMING_KEYS",
    "PRESET_NAMES",
    "PROFILE_KEYS",
    "SAFE_NAME",
    "SPIKES_KEYS",
    "TOP_KEYS",
    "WATCH_KEYS",
    "AlertsConfig",
    "Config",
    "ConfigError",
    "GraphiteConfig",
    "HandlersConfig",
    "MemoryConfig",
    "NamingConfig",
    "Prepared",
    "Problem",
    "ProfileConfig",
    "SpikesConfig",
    "WatchTarget",
    "by_line",
    "load",
    "parse_host_port",
    "prepare",
    "read",
    "short_hostname",
]

GRAPHITE_KEYS = tuple(n for n, _ in keys_of(GraphiteConfig))
NAMING_KEYS = tuple(n for n, _ in keys_of(NamingConfig))
WATCH_KEYS = tuple(n for n, _ in keys_of(WatchTarget))
HANDLERS_KEYS = tuple(n for n, _ in keys_of(HandlersConfig))
PROFILE_KEYS = tuple(n for n, _ in keys_of(ProfileConfig))
SPIKES_KEYS = tuple(n for n, _ in keys_of(SpikesConfig))
ALERTS_KEYS = tuple(n for n, _ in keys_of(AlertsConfig))

Source = str | os.PathLike[str] | Mapping[str, Any] | Config | None


def load(source: Source = None, env: Mapping[str, str] | None = None) -> Config:
    """Read a configuration from a YAML path, a dict, or (``None``) ``$CALLWATCH_CONFIG``.

    Environment overrides (``CALLWATCH_GRAPHITE``, ``CALLWATCH_DISABLED``) are applied.
    Raises :class:`ConfigError` listing every problem found, and nothing else.
    """
    cfg, problems = read(source, env)
    if problems:
        raise ConfigError(problems)
    return cfg


def read(source: Source = None, env: Mapping[str, str] | None = None) -> tuple[Config, list[Problem]]:
    """The configuration (defaults where a value is wrong) and every problem, sorted by line.

    Raises :class:`ConfigError` only when the file cannot be read as YAML at all.
    """
    env = os.environ if env is None else env
    if isinstance(source, Config):
        return apply_env(source, env)
    if source is None:
        path = env.get(ENV_CONFIG, "").strip()
        if path:
            source = path
    problems: list[Problem] = []
    if source is None:
        root, chk = V({}, None), Checker("<defaults>")
    elif isinstance(source, Mapping):
        root, chk = from_plain(source, "<dict>"), Checker("<dict>")
    else:
        chk = Checker(str(Path(source)))
        root = read_yaml(Path(source), problems)
    chk.problems.extend(problems)
    cfg = build(root, chk)
    cfg, env_problems = apply_env(cfg, env)
    return cfg, by_line(chk.problems + env_problems)


_LINE = re.compile(r":(\d+)$")


def by_line(problems: list[Problem]) -> list[Problem]:
    """Sorted by line; problems without a line (the file, the environment) first, in order."""
    def line(p: Problem) -> int:
        m = _LINE.search(p.where)
        return int(m.group(1)) if m else 0

    return sorted(problems, key=line)

