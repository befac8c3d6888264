"""Patching resolved targets in place, and putting back exactly what was there.

Every object callwatch puts in place is remembered with what it replaced (``_targets.placed``),
so that a later ``configure()`` sees through callwatch's own wrappers to the user's
function: it wraps the original, and records the original as what to restore.  Undo
restores an attribute only while it still holds the object this ``Patches`` put there;
if a newer configuration has replaced it, that one's undo restores the original.  So
any sequence of configure/shutdown calls leaves exactly the configured targets watched,
once each (tests/test_reconfigure.py).

Copies bound earlier with ``from myapp.db import get_user [as other]`` are patched too: a
module-level name in another module is patched when it holds the same function object
and that module's source binds it with a ``from ... import get_user`` statement (when
its source cannot be read: when the name is the function's own name).  A variable that
merely holds the function (``ORIGINAL = db.get_user``), a dict of callbacks, a default
argument or a closure keeps calling the original.
"""

from __future__ import annotations

import ast
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Callable

from . import _core, _monitor, _targets
from ._targets import placed as _placed, see_through
from .config import ConfigError, Problem

_MISSING = object()


@dataclass
class Patches:
    """What ``patch`` changed, to undo it in reverse order."""

    done: list[tuple[Any, str, Any, Any]] = field(default_factory=list)  # owner, attr, old raw, new raw
    aliases: list[str] = field(default_factory=list)
    callbacks: list[Callable[[], None]] = field(default_factory=list)  # presets' own undo

    def put(self, owner: Any, attr: str, new: Any) -> None:
        old = see_through(vars(owner).get(attr, _MISSING))
        setattr(owner, attr, new)
        _placed[id(new)] = (new, old)
        self.done.append((owner, attr, old, new))

    def undo(self) -> None:
        for cb in reversed(self.callbacks):
            try:
                cb()
            except Exception:
                pass
        self.callbacks.clear()
        for owner, attr, old, new in reversed(self.done):
            _placed.pop(id(new), None)
            try:
                if vars(owner).get(attr, _MISSING) is not new:
                    continue  # replaced since (by a newer configuration, or the user): leave it
                if old is _MISSING:
                    delattr(owner, attr)
                else:
                    setattr(owner, attr, old)
            except Exception:
                pass
        self.done.clear()
        self.aliases.clear()


def patch(resolved: list[Any]) -> Patches:
    """Replace each resolved function with its watched wrapper; all or nothing.

    Raises ConfigError (naming the target) if an attribute cannot be set.
    """
    patches = Patches()
    copies = _Copies()
    r: Any = None
    try:
        for r in resolved:
            _patch_one(r, patches, copies)
    except Exception as e:
        patches.undo()
        where = r.spec.where if r is not None else "<config>"
        if isinstance(r, _targets.PresetUse):
            what = f"preset {r.spec.preset}"
        else:
            what = f"{r.spec.module}:{r.qualname}" if r is not None else "a target"
        raise ConfigError([Problem(where, "target", f"cannot patch '{what}': {type(e).__name__}: {e}",
                                   "watch a Python function that calls it instead")]) from None
    return patches


def _patch_one(r: Any, patches: Patches, copies: _Copies) -> None:
    from .presets import PRESETS

    if isinstance(r, _targets.PresetUse):
        PRESETS[r.spec.preset or ""].apply(r.group, patches.callbacks)
        return
    if getattr(r.func, _core.MARK, None) is not None:
        return  # watched in the code itself (@callwatch.watch): never wrap twice
    if r.spec.mode == "count":
        undo = _monitor.count(r.func, r.name, r.spec.group)
        if undo is not None:
            patches.callbacks.append(undo)
            return  # counted through sys.monitoring: nothing replaced
    wrapper = _core.make_watched(r.func, r.name, r.spec.group)
    if r.kind == "staticmethod":
        new: Any = staticmethod(wrapper)
    elif r.kind == "classmethod":
        new = classmethod(wrapper)
    else:
        new = wrapper
    patches.put(r.owner, r.attr, new)
    if r.kind == "function":
        _patch_aliases(r, wrapper, patches, copies)


class _Copies:
    """Module-level names that hold a function (or callwatch's wrapper of it), by the
    function: sys.modules is read once per patch(), not once per watched function
    (benchmarks/configure_targets.py times patch() for 10 to 1,000 functions)."""

    def __init__(self) -> None:
        self._index: dict[int, list[tuple[str, Any, str]]] | None = None

    def of(self, func: Any) -> list[tuple[str, Any, str]]:
        if self._index is None:
            self._index = {}
            for modname, mod in list(sys.modules.items()):
                d = getattr(mod, "__dict__", None)
                if not isinstance(d, dict):
                    continue
                for name, value in list(d.items()):
                    user = see_through(value)
                    if isinstance(user, types.FunctionType):
                        self._index.setdefault(id(user), []).append((modname, mod, name))
        return self._index.get(id(func), [])


def _patch_aliases(r: Any, wrapper: Any, patches: Patches, copies: _Copies) -> None:
    by_module: dict[str, tuple[Any, list[str]]] = {}
    for modname, mod, name in copies.of(r.func):
        if mod is not r.owner and see_through(vars(mod).get(name)) is r.func:
            by_module.setdefault(modname, (mod, []))[1].append(name)
    for modname, (mod, names) in by_module.items():
        imported = _imported_names(mod, r.attr)
        for name in names:
            if name not in imported:
                continue  # the same object under a name the module did not import it as
            try:
                patches.put(mod, name, wrapper)
            except Exception:
                continue
            patches.aliases.append(f"{modname}.{name}")


def _imported_names(mod: Any, attr: str) -> set[str]:
    """Names ``mod`` binds with ``from ... import attr [as name]`` (or ``*``)."""
    try:
        import inspect

        tree = ast.parse(inspect.getsource(mod))
    except Exception:  # no source, or source that does not parse
        return {attr}  # no source to read: only the function's own name counts
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for a in node.names:
                if a.name == attr:
                    out.add(a.asname or attr)
                elif a.name == "*":
                    out.add(attr)
    return out
