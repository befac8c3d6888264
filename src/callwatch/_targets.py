"""Resolving ``watch`` targets to functions, and patching them in place.

A target is ``module.path:Qualified.name`` or a glob over a module's names.  Resolution
imports the module and finds, for each function, the object that holds it (a module or a
class), the attribute name, and how it is stored there (plain function, staticmethod,
classmethod).  Patching replaces that attribute with a watched wrapper and remembers how
to put the original back.

Copies bound earlier with ``from myapp.db import get_user`` are other names for the same
function object: at patch time every module-level name in ``sys.modules`` that holds the
original function is patched too (and restored on ``shutdown()``).  Copies held elsewhere
(a dict of callbacks, a default argument, a closure) keep calling the original.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable

from . import _core, _monitor
from .config import ConfigError, Problem, WatchTarget

_MISSING = object()


@dataclass
class Resolved:
    """One function a target matched."""

    spec: WatchTarget
    qualname: str
    owner: Any  # module or class holding the attribute
    attr: str
    raw: Any  # what owner.__dict__[attr] is (function, staticmethod, classmethod...)
    func: Callable[..., Any]  # the function to wrap
    kind: str  # "function", "method", "staticmethod", "classmethod", "builtin"
    name: str  # metric name

    def describe(self) -> str:
        owner = getattr(self.owner, "__name__", repr(self.owner))
        return f"{self.spec.module}:{self.qualname} -> {self.kind} {owner}.{self.attr}, metric '{self.name}'" + (
            f", group '{self.spec.group}'" if self.spec.group else "")


def metric_name(qualname: str) -> str:
    """``Storage.get_user`` -> ``Storage_get_user`` (one Graphite path component)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", qualname.replace(".<locals>.", "."))


def _import(spec: WatchTarget, problems: list[Problem]) -> types.ModuleType | None:
    try:
        return importlib.import_module(spec.module)
    except ModuleNotFoundError as e:
        if e.name and (spec.module == e.name or spec.module.startswith(e.name + ".")):
            problems.append(Problem(spec.where, "target", f"module '{e.name}' not found (from '{spec.target}')",
                                    "check the spelling, and that the application's directory is on "
                                    "sys.path (check-config: --path DIR)"))
        else:
            problems.append(Problem(spec.where, "target", f"importing '{spec.module}' failed: {e}",
                                    "install the missing module or fix the import in the application"))
    except Exception as e:  # the user's module raised while importing
        problems.append(Problem(spec.where, "target",
                                f"importing '{spec.module}' raised {type(e).__name__}: {e}",
                                "fix the error in that module (import it by hand to see the traceback)"))
    return None


def _classify(owner: Any, attr: str) -> tuple[Any, Callable[..., Any] | None, str]:
    """(raw attribute, function to wrap, kind); function None when not watchable."""
    if isinstance(owner, type):
        raw = _MISSING
        for klass in owner.__mro__:
            if attr in vars(klass):
                raw = vars(klass)[attr]
                break
        if isinstance(raw, staticmethod):
            return raw, raw.__func__, "staticmethod"
        if isinstance(raw, classmethod):
            return raw, raw.__func__, "classmethod"
        if isinstance(raw, types.FunctionType):
            return raw, raw, "method"
        if raw is _MISSING:
            return raw, None, "missing"
        if isinstance(raw, type):
            return raw, None, "class"
        if isinstance(raw, (property, types.MemberDescriptorType, types.GetSetDescriptorType)):
            return raw, None, "descriptor"
        return raw, (raw if callable(raw) else None), ("builtin" if callable(raw) else "value")
    raw = vars(owner).get(attr, _MISSING) if hasattr(owner, "__dict__") else getattr(owner, attr, _MISSING)
    if raw is _MISSING:
        return raw, None, "missing"
    if isinstance(raw, type):
        return raw, None, "class"
    if isinstance(raw, types.FunctionType):
        return raw, raw, "function"
    if callable(raw):
        return raw, raw, "builtin"
    return raw, None, "value"


def _why_not(kind: str, raw: Any) -> tuple[str, str]:
    if kind == "class":
        return ("is a class, not a function", "watch its methods instead, e.g. 'Class.method' or 'Class.*'")
    if kind == "descriptor":
        return ("is a property or descriptor, not a function", "watch the function it calls instead")
    return (f"is not callable (it is {type(raw).__name__})", "point the target at a function or method")


def _explicit(spec: WatchTarget, module: types.ModuleType, problems: list[Problem]) -> list[Resolved]:
    parts = spec.qualname.split(".")
    owner: Any = module
    for i, part in enumerate(parts[:-1]):
        nxt = getattr(owner, part, _MISSING)
        if nxt is _MISSING:
            where = ".".join(parts[:i]) or spec.module
            problems.append(Problem(spec.where, "target", f"'{where}' has no attribute '{part}' (from '{spec.target}')",
                                    _suggest(owner, part)))
            return []
        if not isinstance(nxt, (type, types.ModuleType)):
            problems.append(Problem(spec.where, "target",
                                    f"'{'.'.join(parts[: i + 1])}' is a {type(nxt).__name__}, not a class",
                                    "the part before the last '.' must name a class"))
            return []
        owner = nxt
    attr = parts[-1]
    raw, func, kind = _classify(owner, attr)
    if kind == "missing":
        problems.append(Problem(spec.where, "target",
                                f"'{getattr(owner, '__name__', owner)}' has no attribute '{attr}' (from '{spec.target}')",
                                _suggest(owner, attr)))
        return []
    if func is None:
        msg, fix = _why_not(kind, raw)
        problems.append(Problem(spec.where, "target", f"'{spec.target}' {msg}", fix))
        return []
    if isinstance(owner, type) and not _can_set(owner):
        problems.append(Problem(spec.where, "target",
                                f"'{spec.target}' belongs to the built-in type '{owner.__name__}', which cannot be patched",
                                "watch the Python function that calls it instead"))
        return []
    name = spec.name or metric_name(spec.qualname)
    return [Resolved(spec, spec.qualname, owner, attr, raw, func, kind, name)]


def _can_set(klass: type) -> bool:
    return not (klass.__flags__ & (1 << 8)) if hasattr(klass, "__flags__") else True  # Py_TPFLAGS_IMMUTABLETYPE


def _suggest(owner: Any, name: str) -> str:
    import difflib

    names = [n for n in dir(owner) if not n.startswith("__")]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.75)
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return "check the spelling and the module path"


def _members(module: types.ModuleType) -> list[tuple[str, Any, str]]:
    """(qualname, owner, attr) for functions defined in the module, classes included."""
    out: list[tuple[str, Any, str]] = []
    modname = module.__name__
    seen: set[int] = set()

    def visit(owner: Any, prefix: str) -> None:
        if id(owner) in seen:
            return
        seen.add(id(owner))
        for attr, raw in list(vars(owner).items()):
            q = f"{prefix}{attr}"
            if isinstance(raw, (staticmethod, classmethod)):
                raw = raw.__func__
            if isinstance(raw, types.FunctionType):
                if raw.__module__ == modname or isinstance(owner, type):
                    out.append((q, owner, attr))
            elif isinstance(raw, type) and raw.__module__ == modname:
                visit(raw, q + ".")

    visit(module, "")
    return out


def _glob(spec: WatchTarget, module: types.ModuleType, problems: list[Problem]) -> list[Resolved]:
    pattern = spec.qualname
    pat_parts = pattern.split(".")
    found: list[Resolved] = []
    for qualname, owner, attr in _members(module):
        parts = qualname.split(".")
        # Like shell globs and hidden files: '*' does not match a name that starts with
        # '_' unless the pattern's matching part starts with '_' too.
        if any(p.startswith("_") and not (i < len(pat_parts) and pat_parts[i].startswith("_"))
               for i, p in enumerate(parts)):
            continue
        if not fnmatch.fnmatchcase(qualname, pattern):
            continue
        raw, func, kind = _classify(owner, attr)
        if func is None:
            continue
        found.append(Resolved(spec, qualname, owner, attr, raw, func, kind, metric_name(qualname)))
    if not found:
        problems.append(Problem(spec.where, "target", f"the glob '{spec.target}' matches no function",
                                f"check the pattern against the names in {spec.module} "
                                "(names starting with '_' only match a pattern part starting with '_')"))
    return found


@dataclass
class PresetUse:
    """A ``{preset: ...}`` watch entry (see callwatch.presets)."""

    spec: WatchTarget

    @property
    def group(self) -> str:
        from .presets import PRESETS

        return self.spec.group or PRESETS[self.spec.preset or ""].group

    def describe(self) -> str:
        return f"preset {self.spec.preset}, group '{self.group}'"


def resolve(targets: tuple[WatchTarget, ...] | list[WatchTarget]
            ) -> tuple[list[Resolved | PresetUse], list[Problem]]:
    """Resolve every target; returns the functions found and the problems, never raises."""
    from .presets import missing_package

    problems: list[Problem] = []
    out: list[Resolved | PresetUse] = []
    by_func: dict[tuple[int, str], Resolved] = {}
    by_name: dict[tuple[str, str | None], Resolved] = {}
    presets: set[str] = set()
    for spec in targets:
        if spec.mode == "sampled":
            continue  # matched against profiles, nothing to import or patch
        if spec.preset is not None:
            missing = missing_package(spec.preset)
            if missing is not None:
                problems.append(Problem(spec.where, "preset", f"the {spec.preset} preset needs the "
                                        f"'{missing}' package, which is not installed",
                                        f"pip install {missing}, or remove the preset"))
            elif spec.preset not in presets:
                presets.add(spec.preset)
                out.append(PresetUse(spec))
            continue
        module = _import(spec, problems)
        if module is None:
            continue
        try:
            found = _glob(spec, module, problems) if spec.is_glob else _explicit(spec, module, problems)
        except Exception as e:  # a hostile __getattr__ or metaclass
            problems.append(Problem(spec.where, "target", f"looking up '{spec.target}' raised {type(e).__name__}: {e}",
                                    "point the target at a plain function or method"))
            continue
        for r in found:
            key = (id(r.owner), r.attr)
            if key in by_func:
                continue  # matched by an earlier target too: watched once, first one wins
            other = by_name.get((r.name, r.spec.group))
            if other is not None and other.func is not r.func:
                problems.append(Problem(spec.where, "target",
                                        f"'{r.spec.module}:{r.qualname}' would get the metric name '{r.name}', "
                                        f"already used by '{other.spec.module}:{other.qualname}' ({other.spec.where})",
                                        "give one of them a different 'name:'"))
                continue
            by_func[key] = r
            by_name[(r.name, r.spec.group)] = r
            out.append(r)
    return out, problems


@dataclass
class Patches:
    """What ``patch`` changed, to undo it in reverse order."""

    done: list[tuple[Any, str, Any, Any]] = field(default_factory=list)  # owner, attr, old raw, new raw
    aliases: list[str] = field(default_factory=list)
    callbacks: list[Callable[[], None]] = field(default_factory=list)  # presets' own undo

    def undo(self) -> None:
        for cb in reversed(self.callbacks):
            try:
                cb()
            except Exception:
                pass
        self.callbacks.clear()
        for owner, attr, old, new in reversed(self.done):
            try:
                d = vars(owner)
                if d.get(attr, _MISSING) is not new:
                    continue  # replaced by someone else since: leave theirs in place
                if old is _MISSING:
                    delattr(owner, attr)
                else:
                    setattr(owner, attr, old)
            except Exception:
                pass
        self.done.clear()
        self.aliases.clear()


def patch(resolved: list[Resolved | PresetUse]) -> Patches:
    """Replace each resolved function with its watched wrapper; all or nothing.

    Raises ConfigError (naming the target) if an attribute cannot be set.
    """
    from .presets import PRESETS

    patches = Patches()
    r: Resolved | PresetUse | None = None
    try:
        for r in resolved:
            if isinstance(r, PresetUse):
                PRESETS[r.spec.preset or ""].apply(r.group, patches.callbacks)
                continue
            if getattr(r.func, _core.MARK, None) is not None:
                continue  # already watched (e.g. @callwatch.watch): never wrap twice
            if r.spec.mode == "count":
                undo = _monitor.count(r.func, r.name, r.spec.group)
                if undo is not None:
                    patches.callbacks.append(undo)
                    continue  # counted through sys.monitoring: nothing replaced
            wrapper = _core.make_watched(r.func, r.name, r.spec.group)
            if r.kind == "staticmethod":
                new: Any = staticmethod(wrapper)
            elif r.kind == "classmethod":
                new = classmethod(wrapper)
            else:
                new = wrapper
            old = vars(r.owner).get(r.attr, _MISSING)
            setattr(r.owner, r.attr, new)
            patches.done.append((r.owner, r.attr, old, new))
            if r.kind == "function":
                _patch_aliases(r, wrapper, patches)
    except Exception as e:
        patches.undo()
        where = r.spec.where if r is not None else "<config>"
        if isinstance(r, PresetUse):
            what = f"preset {r.spec.preset}"
        else:
            what = f"{r.spec.module}:{r.qualname}" if r is not None else "a target"
        raise ConfigError([Problem(where, "target", f"cannot patch '{what}': {type(e).__name__}: {e}",
                                   "watch a Python function that calls it instead")]) from None
    return patches


def _patch_aliases(r: Resolved, wrapper: Any, patches: Patches) -> None:
    for modname, mod in list(sys.modules.items()):
        d = getattr(mod, "__dict__", None)
        if not isinstance(d, dict) or mod is r.owner:
            continue
        for name, value in list(d.items()):
            if value is r.func:
                try:
                    setattr(mod, name, wrapper)
                except Exception:
                    continue
                patches.done.append((mod, name, value, wrapper))
                patches.aliases.append(f"{modname}.{name}")


def resolve_dimensions(dims: Any) -> tuple[dict[str, list[tuple[str, Callable[..., Any]]]], list[Problem]]:
    """handlers.dimensions -> {handler: [(dimension, function)]}, and the problems."""
    out: dict[str, list[tuple[str, Callable[..., Any]]]] = {}
    problems: list[Problem] = []
    for handler, per in dims.items():
        for dim, spec in per.items():
            module = _import(spec, problems)
            if module is None:
                continue
            found = _explicit(spec, module, problems)
            if found:
                out.setdefault(handler, []).append((dim, found[0].func))
    return out, problems
