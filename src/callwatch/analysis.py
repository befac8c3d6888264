"""Reading profile dumps (pstats files: callwatch's dumps or plain cProfile's) and
comparing them.  Used by ``callwatch stats``, ``diff`` and ``callgraph``."""

from __future__ import annotations

import marshal
import math
import pstats
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

__all__ = ["AnalysisError", "DiffRow", "Profiles", "diff", "label", "load"]

SUFFIXES = (".prof", ".pstats", ".pstat", ".stat", ".stats", ".out")

FuncKey = tuple[str, int, str]


class AnalysisError(Exception):
    """A file that cannot be used, with the reason and the fix, in one line."""


@dataclass
class Profiles:
    stats: pstats.Stats
    files: list[Path]

    @property
    def requests(self) -> int:
        """Each dump is one profiled request (or one cProfile run)."""
        return len(self.files)


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES)
            if not found:
                raise AnalysisError(f"{p}: no profile files ({', '.join('*' + s for s in SUFFIXES)}) in this "
                                    "directory. Fix: point at callwatch's profile.dump_dir, or at .prof files")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise AnalysisError(f"{p}: no such file or directory. Fix: check the path")
    if not files:
        raise AnalysisError("no profile files given. Fix: name one or more .prof files or directories")
    return files


def _check(path: Path) -> dict[Any, Any]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AnalysisError(f"{path}: cannot read it ({e.strerror or e}). Fix: check the permissions") from None
    if not data:
        raise AnalysisError(f"{path}: empty file, not a profile. Fix: dump profiles with cProfile's "
                            "dump_stats() or callwatch's profile.dump_dir")
    try:
        stats = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        raise AnalysisError(f"{path}: not a pstats profile (not marshal data; corrupt, truncated, or another "
                            "format). Fix: dump profiles with cProfile's dump_stats() or callwatch's "
                            "profile.dump_dir") from None
    ok = isinstance(stats, dict) and all(
        isinstance(k, tuple) and len(k) == 3 and isinstance(v, tuple) and len(v) == 5
        for k, v in list(stats.items())[:50])
    if not ok:
        raise AnalysisError(f"{path}: not a pstats profile (marshal data of another shape). Fix: dump profiles "
                            "with cProfile's dump_stats() or callwatch's profile.dump_dir")
    return dict(stats)


def load(paths: Iterable[str | Path]) -> Profiles:
    """Merge the profiles in ``paths`` (files or directories of dumps)."""
    files = _expand(paths)
    for f in files:
        _check(f)
    try:  # one call, so that the sums are pstats' own to the last bit
        merged = pstats.Stats(*(str(f) for f in files))
    except Exception as e:  # pstats' own view of a file we could not tell was bad
        raise AnalysisError(f"{', '.join(map(str, files))}: pstats cannot load them ({type(e).__name__}: {e})") from None
    return Profiles(merged, files)


def label(key: FuncKey) -> str:
    """pstats' own way to name a function: ``file:line(name)`` or ``{built-in ...}``."""
    return str(pstats.func_std_string(key))  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DiffRow:
    key: FuncKey
    calls_a: float  # per request
    calls_b: float
    cum_ms_a: float
    cum_ms_b: float

    @property
    def calls_ratio(self) -> float:
        return _ratio(self.calls_b, self.calls_a)

    @property
    def cum_ratio(self) -> float:
        return _ratio(self.cum_ms_b, self.cum_ms_a)


def _ratio(b: float, a: float) -> float:
    if a == 0:
        return math.inf if b > 0 else 1.0
    return b / a


def is_wrapper(key: FuncKey) -> bool:
    """callwatch's own generated watched wrapper (its calls equal the wrapped function's)."""
    return key[0].startswith("<callwatch wrapper")


def diff(a: Profiles, b: Profiles, wrappers: bool = False) -> list[DiffRow]:
    """Per function: calls and cumulative ms per request in A and in B, most grown first
    (by calls per request, then by added cumulative time).  callwatch's own wrappers are
    left out unless ``wrappers``."""
    sa: dict[FuncKey, Any] = a.stats.stats  # type: ignore[attr-defined]
    sb: dict[FuncKey, Any] = b.stats.stats  # type: ignore[attr-defined]
    na, nb = a.requests, b.requests
    rows = []
    for key in set(sa) | set(sb):
        if not wrappers and is_wrapper(key):
            continue
        ca, ta = (sa[key][1], sa[key][3]) if key in sa else (0, 0.0)
        cb, tb = (sb[key][1], sb[key][3]) if key in sb else (0, 0.0)
        rows.append(DiffRow(key, ca / na, cb / nb, ta * 1000 / na, tb * 1000 / nb))
    rows.sort(key=lambda r: (-min(r.calls_ratio, 1e9), -(r.cum_ms_b - r.cum_ms_a), label(r.key)))
    return rows
