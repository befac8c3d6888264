"""One entry point from a source to everything ``configure()`` needs, or one ConfigError.

``prepare()`` loads the file, resolves the watch targets and the dimension functions
(importing the user's modules) and checks what the profile section needs, and reports
every problem of all of these in one :class:`ConfigError`, sorted by line.  It never
raises anything else: a target module that raises, or calls ``sys.exit()``, on import is
a located problem (``_targets`` catches it).  ``check-config`` prints the same problems,
and the warnings, which do not stop a configuration.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import ConfigError, Problem
from ._model import Config


@dataclass(frozen=True)
class Prepared:
    """A checked configuration and what it resolved to; nothing is patched yet."""

    config: Config
    resolved: list[Any] = field(default_factory=list)  # _targets.Resolved | _targets.PresetUse
    #: handler -> [(dimension, function)]
    dimensions: dict[str, list[tuple[str, Callable[..., Any]]]] = field(default_factory=dict)
    #: mistakes that do not stop the configuration (check-config prints them)
    warnings: list[Problem] = field(default_factory=list)


def prepare(source: Any = None, env: Mapping[str, str] | None = None) -> Prepared:
    """Load, resolve the watch targets and dimensions, check the profile section: all or nothing.

    Returns a :class:`Prepared`, or raises one :class:`ConfigError` with every problem of
    the file (schema and target problems together, sorted by line).  Never raises
    anything else, whatever the file or the imported modules do::

        prepared = prepare("callwatch.yaml")
        patches = _patching.patch(prepared.resolved)
    """
    from .. import _targets
    from . import by_line, read

    cfg, problems = read(source, env)
    if not cfg.enabled:
        if problems:
            raise ConfigError(problems)
        return Prepared(cfg)
    resolved, found = _targets.resolve(cfg.watch)
    dims, more = _targets.resolve_dimensions(cfg.handlers.dimensions)
    problems = by_line(problems + found + more + _profile_problems(cfg))
    if problems:
        raise ConfigError(problems)
    return Prepared(cfg, resolved, dims, _warnings(cfg, resolved))


def _profile_problems(cfg: Config) -> list[Problem]:
    if cfg.profile is None:
        return []
    try:
        import yappi  # noqa: F401
    except ImportError:
        return [Problem(cfg.where.get("profile", cfg.source), "profile",
                        "profiling needs the 'yappi' package, which is not installed",
                        "pip install 'callwatch[profile]', or remove the profile section")]
    return []


def _warnings(cfg: Config, resolved: list[Any]) -> list[Problem]:
    """call_budget entries that name nothing watched: the budget could never apply."""
    if cfg.profile is None or not cfg.profile.call_budget:
        return []
    from .. import _core
    from .._targets import PresetUse, Resolved
    from ..presets import PRESETS

    # @callwatch.watch functions of the imported modules are in the registry too
    names = {r.name for r in resolved if isinstance(r, Resolved)} | {e.name for e in _core.registry.entries}
    groups = {r.spec.group for r in resolved if isinstance(r, Resolved) and r.spec.group}
    groups |= {r.group for r in resolved if isinstance(r, PresetUse)}
    patterns = [m for r in resolved if isinstance(r, PresetUse) for m in PRESETS[r.spec.preset or ""].metrics]
    out = []
    for fname in cfg.profile.call_budget:
        if fname in names or fname in groups or any(fnmatch.fnmatchcase(fname, p) for p in patterns):
            continue
        close = difflib.get_close_matches(fname, sorted(names | groups), n=1)
        hint = f"did you mean '{close[0]}'?" if close else "use the metric name check-config shows for a target"
        out.append(Problem(cfg.where.get(f"profile.call_budget.{fname}", cfg.source),
                           f"profile.call_budget.{fname}",
                           f"'{fname}' is not the metric name of a watched function or group, so this "
                           "budget never applies", hint))
    return out

