"""The leak hunt, on demand: what grew, what holds it, and where it was allocated.

``memory.hunt_dir`` turns it on.  Triggered like an on-demand profile, by a file in that
directory: ``start`` (every process sharing the directory hunts, once per new
modification time of the file) or ``start.<pid>`` (that process only; removed when read).
The file may hold the hunt's length in seconds (default ``HUNT_S``).  The flush that sees
it starts the hunt; the first flush that many seconds later ends it.  All of it runs on
the flush thread:

- at the start: the objects counted by type (``memory.count_types``); ``tracemalloc``
  started (unless the host runs it already) and a snapshot taken;
- at the end: counted again and a second snapshot, tracemalloc stopped if started here;
  for the types that grew most (``HUNT_TYPES``), one of their objects and objgraph's
  back-reference chain from a module to it (``find_backref_chain``), as text and as a
  ``.dot`` file (and an ``.svg`` when graphviz's ``dot`` is installed); and the
  allocation sites whose memory grew most between the two snapshots.

Results go to ``<hunt_dir>/<UTC time>-<pid>/`` (``report.txt``, ``chain-<n>.dot``/
``.svg``); ``callwatch leaks DIR`` prints the newest report.  A hunt costs what it says:
tracemalloc slows every allocation while it runs (``python benchmarks/memory.py``
measures how much), and the chain search walks referrers while holding the interpreter
(bounded by ``MAX_DEPTH``).  It is for when a leak is suspected, not for always.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import stat
import subprocess
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .aggregate import Snapshot
from .memory import LEAK_MIN_OBJECTS, count_types

log = logging.getLogger("callwatch")

__all__ = ["LeakHunt", "REPORT"]

#: Default length of a hunt, seconds, and the longest one.
HUNT_S = 60.0
MAX_HUNT_S = 3600.0
#: Types whose chain is searched: those that grew most, by ``LEAK_MIN_OBJECTS`` at least.
HUNT_TYPES = 3
#: How far the chain search goes back from the object (objgraph's ``max_depth``).
MAX_DEPTH = 20
#: Allocation sites listed.
TOP_SITES = 10
#: Frames tracemalloc keeps per allocation while a hunt runs: the site is all the report
#: shows, and each frame more costs every allocation more.
FRAMES = 1
REPORT = "report.txt"


class LeakHunt:
    """An exporter stage: polls the trigger files at each flush, runs one hunt at a time."""

    def __init__(self, hunt_dir: str) -> None:
        self.dir = Path(hunt_dir)
        self._seen_mtime: float | None = None
        self._ends_at: float | None = None
        self._counts: dict[str, int] = {}
        self._snapshot: Any = None
        self._started_tracing = False

    def __call__(self, snap: Snapshot) -> None:
        if self._ends_at is None:
            seconds = self._triggered()
            if seconds is not None:
                self._start(seconds)
        elif time.monotonic() >= self._ends_at:
            self._end()

    def _triggered(self) -> float | None:
        mine = self.dir / f"start.{os.getpid()}"
        shared = self.dir / "start"
        try:
            text = _read_trigger(mine)
            if text is not None:
                mine.unlink()
                return _seconds(text, mine)
            st = os.stat(shared) if shared.exists() else None
            if st is not None and st.st_mtime != self._seen_mtime:
                self._seen_mtime = st.st_mtime
                text = _read_trigger(shared)
                return _seconds(text, shared) if text is not None else None
        except OSError as e:
            log.warning("callwatch: cannot read the leak hunt trigger in %s (%s)", self.dir, e)
        return None

    def _start(self, seconds: float) -> None:
        log.warning("callwatch: leak hunt started for %.0f s (results in %s)", seconds, self.dir)
        self._counts = count_types()
        self._started_tracing = not tracemalloc.is_tracing()
        try:
            if self._started_tracing:
                tracemalloc.start(FRAMES)
            self._snapshot = tracemalloc.take_snapshot()
        except BaseException:
            self.close()
            raise
        self._ends_at = time.monotonic() + seconds

    def close(self) -> None:
        """The hunt under way, abandoned (shutdown, reconfigure): tracemalloc stopped if
        the hunt started it, its snapshot dropped."""
        if self._started_tracing:
            self._started_tracing = False
            tracemalloc.stop()
        self._ends_at = None
        self._counts, self._snapshot = {}, None

    def _end(self) -> None:
        try:
            after = count_types()
            snapshot = tracemalloc.take_snapshot() if tracemalloc.is_tracing() else None
            before, counts = self._snapshot, self._counts
        finally:
            self.close()
        self._report(counts, after, before, snapshot)

    def _report(self, counts: dict[str, int], after: dict[str, int], before: Any, snapshot: Any) -> None:
        out = _new_dir(self.dir, f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{os.getpid()}")
        grown = sorted(((n - counts.get(t, 0), t) for t, n in after.items()
                        if n > counts.get(t, 0) and not _ours(t)), reverse=True)
        lines = [f"callwatch leak hunt, process {os.getpid()}, ended {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}"
                 " UTC", "", "Types that grew (objects the GC tracks, start -> end):"]
        lines += [f"  {t}: {counts.get(t, 0):,} -> {after[t]:,} (+{d:,})" for d, t in grown[:20]] or ["  none"]
        for i, name in enumerate([t for d, t in grown if d >= LEAK_MIN_OBJECTS][:HUNT_TYPES], 1):
            lines += ["", f"What holds a {name} (objgraph's back-reference chain from a module):"]
            lines += _chain(name, out / f"chain-{i}")
        lines += ["", "Allocation sites that grew most (tracemalloc, start -> end):"]
        lines += _sites(before, snapshot)
        _write_new(out / REPORT, "\n".join(lines) + "\n")
        log.warning("callwatch: leak hunt done: %s", out / REPORT)


def _ours(type_name: str) -> bool:
    """The hunt's own objects (tracemalloc's snapshots) and callwatch's, not the program's."""
    return type_name.startswith(("tracemalloc.", "callwatch.")) and not type_name.startswith("callwatch.demo.")


def _read_trigger(path: Path) -> str | None:
    """A trigger file's text (at most 64 bytes), or None when there is none.  Only a
    regular file, not followed if it is a link: a FIFO would block the flush thread, and
    a link to /dev/zero would read without end."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return os.read(fd, 64).decode("ascii", "replace")
    finally:
        os.close(fd)


def _new_dir(parent: Path, name: str) -> Path:
    """A directory of the hunt's own under ``parent`` (a new one: never a link or a
    directory someone made there before)."""
    for n in range(100):
        path = parent / (name if n == 0 else f"{name}.{n}")
        try:
            path.mkdir(mode=0o750)
            return path
        except FileExistsError:
            continue
    raise OSError(f"cannot make a new directory for the hunt in {parent}")


def _write_new(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _seconds(text: str, where: Path) -> float:
    text = text.strip()
    try:
        seconds = float(text) if text else HUNT_S
        return min(max(0.0, seconds), MAX_HUNT_S) if seconds == seconds else HUNT_S  # NaN: the default
    except ValueError:
        log.warning("callwatch: %s holds %r, not a number of seconds; hunting for %.0f s", where, text[:40], HUNT_S)
        return HUNT_S


def _one_of(name: str) -> Any:
    """One object of the type named ``name`` (as ``count_types`` names it), or None."""
    from .memory import _type_name

    found = None
    objects = gc.get_objects()
    try:
        for o in reversed(objects):  # the oldest generation last in the list: a survivor first
            if _type_name(type(o)) == name:
                found = o
                break
    finally:
        del objects
    return found


def _chain(name: str, stem: Path) -> list[str]:
    try:
        import objgraph
    except ImportError:
        return ["  (objgraph is not installed: pip install 'callwatch[memory]')"]
    target = _one_of(name)
    if target is None:
        return ["  (none left at the end of the hunt)"]
    chain = objgraph.find_backref_chain(target, objgraph.is_proper_module, max_depth=MAX_DEPTH)
    if len(chain) < 2:
        return [f"  no module reaches it within {MAX_DEPTH} references (held by a frame, a thread, or a cycle)"]
    lines = [f"  {_short(chain[0])}"]
    for parent, child in zip(chain, chain[1:]):
        lines.append(f"    {_how(parent, child)} -> {_short(child)}")
    dot = stem.with_suffix(".dot")
    fd = os.open(dot, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as f:  # output=, not filename=: objgraph then prints nothing
        objgraph.show_chain(chain, output=f)
    lines.append(f"  graph: {dot.name}" + _svg(dot))
    return lines


def _svg(dot: Path) -> str:
    exe = shutil.which("dot")
    if exe is None:
        return " (graphviz's dot is not installed: no .svg)"
    try:
        subprocess.run([exe, "-Tsvg", "-o", str(dot.with_suffix(".svg")), str(dot)], check=True, timeout=60,
                       capture_output=True)
        return f", {dot.with_suffix('.svg').name}"
    except (OSError, subprocess.SubprocessError) as e:
        return f" (dot failed: {e})"


def _short(o: Any) -> str:
    from .memory import _type_name

    kind = _type_name(type(o))
    if kind == "module":
        return f"module {o.__name__}"
    if isinstance(o, (dict, list, tuple, set)):
        return f"{kind} of {len(o):,}"
    return kind[:100]


def _how(parent: Any, child: Any) -> str:
    """How ``parent`` refers to ``child``: the key, index or attribute."""
    try:
        if isinstance(parent, dict):
            for k, v in parent.items():
                if v is child:
                    return f"[{k!r}]"[:80]
        elif isinstance(parent, (list, tuple)):
            for i, v in enumerate(parent):
                if v is child:
                    return f"[{i}]"
        elif getattr(parent, "__dict__", None) is child:
            return ".__dict__"
        else:
            for k, v in vars(parent).items():
                if v is child:
                    return f".{k}"
    except Exception:  # no vars(), or a hostile __eq__ or __getattr__: the hop stays unnamed
        pass
    return "refers to"


def _sites(before: Any, after: Any) -> list[str]:
    if before is None or after is None:
        return ["  (tracemalloc was stopped during the hunt)"]
    from .profiling._reader import is_own

    stats = after.compare_to(before, "lineno")
    grew = [s for s in stats if s.size_diff > 0 and not is_own(s.traceback[0].filename)
            and s.traceback[0].filename != tracemalloc.__file__][:TOP_SITES]
    return [f"  {s.traceback[0].filename}:{s.traceback[0].lineno}: +{s.size_diff / 1024:,.1f} KiB "
            f"(+{s.count_diff:,} blocks)" for s in grew] or ["  none grew"]
