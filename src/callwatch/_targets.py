"""Resolving ``watch`` targets to functions, and patching them in place.

A target is ``module.path:Qualified.name`` or a glob over a module's names.  Resolution
imports the module and finds, for each function, the object that holds it (a module or a
class), the attribute name, and how it is stored there (plain function, staticmethod,
classmethod).  Patching replaces that attribute with a watched wrapper and remembers how
to put the original back.

Patching, and which copies bound elsewhere are patched too, is ``_patching``'s job.

Resolution never raises: whatever the imported module does (raise, ``sys.exit()``, a
hostile ``__getattr__``) becomes a located problem.  It refuses what cannot be watched
safely: Python's built-ins and callwatch's own functions (callwatch calls them while it
records and flushes, so watching them counts callwatch itself and can recurse), and
more than ``MAX_WATCHED`` functions in all.
"""

from __future__ import annotations

import fnmatch
import importlib
import types
from dataclasses import dataclass
from typing import Any, Callable

from .config import MAX_WATCHED, Problem, WatchTarget
from .naming import sanitize

_MISSING = object()
#: id(what callwatch put in place) -> (that object, what it replaced); kept by _patching
placed: dict[int, tuple[Any, Any]] = {}


def see_through(raw: Any) -> Any:
    """The user's object behind a wrapper callwatch put in place, else ``raw`` itself."""
    entry = placed.get(id(raw))
    return entry[1] if entry is not None and entry[0] is raw else raw


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
    return sanitize(qualname.replace(".<locals>.", "."))


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
    except SystemExit as e:  # not KeyboardInterrupt: that one is the user's to stop us
        problems.append(Problem(spec.where, "target", f"importing '{spec.module}' called sys.exit({e.code!r})",
                                "watch functions of a module that can be imported without exiting "
                                "(move the exit under 'if __name__ == \"__main__\":')"))
    except Exception as e:  # the user's module raised while importing
        problems.append(Problem(spec.where, "target",
                                f"importing '{spec.module}' raised {type(e).__name__}: {e}",
                                "fix the error in that module (import it by hand to see the traceback)"))
    return None


def _refused(spec: WatchTarget, module: str) -> Problem | None:
    """Python's built-ins and callwatch's own code (the demo aside) cannot be watched."""
    if module == "builtins":
        return Problem(spec.where, "target", f"'{spec.target}' is one of Python's built-in functions, which "
                       "callwatch itself calls while it records and flushes: watching it would count callwatch "
                       "and can recurse", "watch the function of your application that calls it")
    if (module == "callwatch" or module.startswith("callwatch.")) and not module.startswith("callwatch.demo"):
        return Problem(spec.where, "target", f"'{spec.target}' is part of callwatch itself, which cannot "
                       "watch its own functions", "watch a function of your application")
    return None


def _classify(owner: Any, attr: str) -> tuple[Any, Callable[..., Any] | None, str]:
    """(raw attribute, function to wrap, kind); function None when not watchable."""
    if isinstance(owner, type):
        raw = _MISSING
        for klass in owner.__mro__:
            if attr in vars(klass):
                raw = see_through(vars(klass)[attr])
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
    raw = see_through(raw)
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
    refused = _refused(spec, str(getattr(func, "__module__", None) or ""))
    if refused is not None:
        problems.append(refused)
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
            raw = see_through(raw)
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
    problems: list[Problem] = []
    out: list[Resolved | PresetUse] = []
    by_func: dict[tuple[int, str], Resolved] = {}
    by_name: dict[tuple[str, str | None], Resolved] = {}
    for spec in targets:
        if spec.mode == "sampled":
            continue  # matched against profiles, nothing to import or patch
        if spec.preset is not None:
            _preset(spec, out, problems)
            continue
        found = _find(spec, problems)
        fresh = [r for r in found if (id(r.owner), r.attr) not in by_func]
        if len(by_func) + len(fresh) > MAX_WATCHED:
            problems.append(Problem(spec.where, "target", f"'{spec.target}' matches {len(fresh):,} more "
                                    f"function(s), which makes more than {MAX_WATCHED:,} watched in all",
                                    "narrow the pattern (e.g. 'Class.get_*') or list the functions you need: "
                                    f"callwatch watches at most {MAX_WATCHED:,}, as each adds series per "
                                    "handler and work per flush"))
            continue
        for r in fresh:  # a function matched by an earlier target too is watched once, first one wins
            other = by_name.get((r.name, r.spec.group))
            if other is not None and other.func is not r.func:
                problems.append(Problem(spec.where, "target",
                                        f"'{r.spec.module}:{r.qualname}' would get the metric name '{r.name}', "
                                        f"already used by '{other.spec.module}:{other.qualname}' ({other.spec.where})",
                                        "give one of them a different 'name:'"))
                continue
            by_func[(id(r.owner), r.attr)] = r
            by_name[(r.name, r.spec.group)] = r
            out.append(r)
    return out, problems


def _preset(spec: WatchTarget, out: list[Resolved | PresetUse], problems: list[Problem]) -> None:
    from .presets import missing_package

    missing = missing_package(spec.preset or "")
    if missing is not None:
        problems.append(Problem(spec.where, "preset", f"the {spec.preset} preset needs the '{missing}' package, "
                                "which is not installed", f"pip install {missing}, or remove the preset"))
    elif all(not (isinstance(r, PresetUse) and r.spec.preset == spec.preset) for r in out):
        out.append(PresetUse(spec))


def _find(spec: WatchTarget, problems: list[Problem]) -> list[Resolved]:
    refused = _refused(spec, spec.module)
    if refused is not None:
        problems.append(refused)
        return []
    module = _import(spec, problems)
    if module is None:
        return []
    try:
        return _glob(spec, module, problems) if spec.is_glob else _explicit(spec, module, problems)
    except (Exception, SystemExit) as e:  # a hostile __getattr__ or metaclass
        problems.append(Problem(spec.where, "target", f"looking up '{spec.target}' raised {type(e).__name__}: {e}",
                                "point the target at a plain function or method"))
        return []


def resolve_dimensions(dims: Any) -> tuple[dict[str, list[tuple[str, Callable[..., Any]]]], list[Problem]]:
    """handlers.dimensions -> {handler: [(dimension, function)]}, and the problems; never raises."""
    out: dict[str, list[tuple[str, Callable[..., Any]]]] = {}
    problems: list[Problem] = []
    for handler, per in dims.items():
        for dim, spec in per.items():
            refused = _refused(spec, spec.module)
            module = _import(spec, problems) if refused is None else None
            if refused is not None:
                problems.append(refused)
            if module is None:
                continue
            try:
                found = _explicit(spec, module, problems)
            except (Exception, SystemExit) as e:
                problems.append(Problem(spec.where, "target", f"looking up '{spec.target}' raised "
                                        f"{type(e).__name__}: {e}", "point it at a plain function"))
                continue
            if found:
                out.setdefault(handler, []).append((dim, found[0].func))
    return out, problems
