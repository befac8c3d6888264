"""Checking values against their :class:`~._model.Key`: one reader per kind.

Every getter returns the default after recording a :class:`Problem`, so one run finds
every mistake of a file.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from ..errors import Problem
from ._model import Key
from ._yaml import UNREADABLE, V, show

#: Unknown keys reported per mapping; the rest are counted in one more problem, so a
#: file of junk keys is reported in linear time with a readable list.
MAX_UNKNOWN_REPORTED = 20


def join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


def kind(x: Any) -> str:
    return show(x)


def keys_of(cls: type) -> list[tuple[str, Key]]:
    """The YAML keys of a section class, in file order."""
    return [(f.name, f.metadata["key"]) for f in dataclasses.fields(cls) if "key" in f.metadata]


def default_of(cls: type, name: str) -> Any:
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _or(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]


class Checker:
    def __init__(self, where: str) -> None:
        self.where = where
        self.problems: list[Problem] = []
        self.lines: dict[str, str] = {}  # key path -> "file:line", for later checks

    def loc(self, v: V | None) -> str:
        if v is None or v.line is None:
            return self.where
        return f"{self.where}:{v.line}"

    def add(self, v: V | None, key: str, message: str, fix: str = "") -> None:
        self.problems.append(Problem(self.loc(v), key, message, fix))

    def mapping(self, v: V, key: str, known: tuple[str, ...]) -> dict[str, V]:
        if not isinstance(v.value, dict):
            self.add(v, key, f"expected a mapping of keys ({', '.join(known)}), got {kind(v.value)}",
                     f"write it as '{key}:' followed by indented 'key: value' lines")
            return {}
        unknown = [k for k in v.value if k not in known]
        for k in unknown[:MAX_UNKNOWN_REPORTED]:
            item = v.value[k]
            close = difflib.get_close_matches(k, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys are {', '.join(known)}"
            kv = V(None, item.key_line if item.key_line is not None else item.line)
            short = k if len(k) <= 60 else k[:57] + "..."
            self.add(kv, join(key, short), f"unknown key '{short}'", f"remove it, or {hint}")
        if len(unknown) > MAX_UNKNOWN_REPORTED:
            self.add(v, key, f"{len(unknown) - MAX_UNKNOWN_REPORTED:,} more unknown keys",
                     f"remove them; the known keys are {', '.join(known)}")
        return dict(v.value)

    def section(self, cls: type, v: V | None, path: str) -> tuple[dict[str, Any], dict[str, V]]:
        """Read every plain key of ``cls`` from ``v``: ({field: value}, the raw mapping)."""
        names = keys_of(cls)
        m = self.mapping(v, path, tuple(n for n, _ in names)) if v is not None else {}
        out: dict[str, Any] = {}
        for name, k in names:
            if name in m and k.kind != "custom":
                self.lines[join(path, name)] = self.loc(m[name])
                out[name] = self.value(m[name], join(path, name), name, k, default_of(cls, name))
        return out, m

    def value(self, v: V, path: str, name: str, k: Key, default: Any) -> Any:
        x = v.value
        if x is UNREADABLE:
            return default  # already reported
        if x is None and k.nullable:
            return None
        read = getattr(self, "_" + k.kind)
        return read(v, x, path, name, k, default)

    def _bool(self, v: V, x: Any, path: str, name: str, k: Key, default: Any) -> Any:
        if not isinstance(x, bool):
            self.add(v, path, f"expected true or false, got {show(x)}", f"write '{name}: true' or '{name}: false'")
            return default
        return x

    def _int(self, v: V, x: Any, path: str, name: str, k: Key, default: Any) -> Any:
        if isinstance(x, float) and x.is_integer():
            x = int(x)
        if not isinstance(x, int) or isinstance(x, bool):
            self.add(v, path, f"expected a whole number, got {show(v.value)}", k.fix)
            return default
        if x < k.lo or (k.hi is not None and x > k.hi):
            rng = f"from {k.lo} to {k.hi}" if k.hi is not None else f"of at least {k.lo}"
            self.add(v, path, f"expected a number {rng}, got {show(x)}", k.fix)
            return default
        return x

    def _real(self, x: Any, lo: float, hi: float, lo_ok: bool) -> bool:
        if not isinstance(x, (int, float)) or isinstance(x, bool) or x != x:
            return False
        try:
            f = float(x)
        except OverflowError:
            return False
        return (lo <= f if lo_ok else lo < f) and f <= hi and f != float("inf")

    def _number(self, v: V, x: Any, path: str, name: str, k: Key, default: Any) -> Any:
        if not self._real(x, 0, float("inf"), False):
            self.add(v, path, f"expected a number greater than 0, got {show(x)}", k.fix)
            return default
        return float(x)

    def _fraction(self, v: V, x: Any, path: str, name: str, k: Key, default: Any) -> Any:
        if not self._real(x, 0, 1, True):
            self.add(v, path, f"expected a fraction from 0 to 1, got {show(x)}", k.fix)
            return default
        return float(x)

    def _seconds(self, v: V, x: Any, path: str, name: str, k: Key, default: Any) -> Any:
        if not self._real(x, 0, float("inf"), True):
            self.add(v, path, f"expected seconds (0 or more), got {show(x)}", k.fix)
            return default
        return float(x)

    def _choice(self, v: V, x: Any, path: str, name: str, k: Key, default: Any) -> Any:
        if not isinstance(x, str) or x not in k.choices:
            self.add(v, path, f"expected {_or(k.choices)}, got {show(x)}", k.fix)
            return default
        return x

    def _str(self, v: V, x: Any, path: str, name: str, k: Key, default: Any) -> Any:
        if isinstance(x, (int, float)) and not isinstance(x, bool) and k.pattern is not None:
            x = show(x)
        if not isinstance(x, str):
            self.add(v, path, f"expected a string, got {show(x)}", k.fix or f"quote the value: {name}: \"...\"")
            return default
        if len(x) > k.max_len:
            self.add(v, path, f"the value is {len(x):,} characters long; at most {k.max_len:,} are allowed",
                     k.fix)
            return default
        if k.pattern is not None and not k.pattern.match(x):
            self.add(v, path, f"{show(x)} is not allowed here", k.fix)
            return default
        return x

    def _host(self, v: V, x: Any, path: str, name: str, k: Key, default: Any) -> Any:
        from ._net import normal_host

        s = self._str(v, x, path, name, k, _BAD)
        if s is _BAD:
            return default
        host = normal_host(s)
        if host is None:
            self.add(v, path, f"{show(s)} is not a host name or IP address",
                     k.fix + "; the port goes in 'port:'")
            return default
        return host


_BAD = object()
