"""Reading profile dumps (pstats files: callwatch's dumps or plain cProfile's) and
comparing them.  Used by ``callwatch stats``, ``diff`` and ``callgraph``."""

from __future__ import annotations

import marshal
import math
import pstats
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .errors import AnalysisError

__all__ = ["AnalysisError", "DiffRow", "Profiles", "diff", "label", "load"]

SUFFIXES = (".prof", ".pstats", ".pstat", ".stat", ".stats", ".out")

FuncKey = tuple[str, int, str]




@dataclass
class Profiles:
    """Profile dumps merged into one ``pstats.Stats`` (:func:`load`), and the files."""

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
    if not isinstance(stats, dict):
        raise AnalysisError(f"{path}: not a pstats profile (marshal data of another shape). Fix: dump profiles "
                            "with cProfile's dump_stats() or callwatch's profile.dump_dir")
    for key, value in stats.items():
        problem = _entry_problem(key, value)
        if problem:
            raise AnalysisError(f"{path}: not a usable pstats profile ({problem}). Fix: dump profiles with "
                                "cProfile's dump_stats() or callwatch's profile.dump_dir")
    return dict(stats)


def _entry_problem(key: Any, value: Any) -> str:
    """What is wrong with one entry of a pstats dict ("" if nothing): its shape, or a
    number that is not a finite count or time (NaN would break every ratio downstream)."""
    if not (isinstance(key, tuple) and len(key) == 3 and isinstance(value, tuple) and len(value) == 5
            and isinstance(value[4], dict)):
        return "marshal data of another shape"
    where = f"{str(key)[:100]}"
    if not all(_count(v) for v in value[:4]):
        return f"{where} has the counts and times {str(value[:4])[:100]}, not finite numbers >= 0"
    for caller, c in value[4].items():
        # cProfile stores 4 numbers per caller, the pure-Python profile module a count
        if not (isinstance(caller, tuple) and (_count(c) or isinstance(c, tuple) and len(c) == 4
                                               and all(_count(v) for v in c))):
            return f"{where}, its caller {str(caller)[:100]}: {str(c)[:100]} is not finite numbers >= 0"
    return ""


def _count(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


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
    """One function of a :func:`diff`: its calls and cumulative ms per request in A and B."""

    key: FuncKey
    calls_a: float  # per request
    calls_b: float
    cum_ms_a: float
    cum_ms_b: float

    @property
    def calls_ratio(self) -> float:
        """Calls per request, B over A (inf: none in A; 1.0: none in either)."""
        return _ratio(self.calls_b, self.calls_a)

    @property
    def cum_ratio(self) -> float:
        """Cumulative ms per request, B over A (inf: none in A; 1.0: none in either)."""
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
