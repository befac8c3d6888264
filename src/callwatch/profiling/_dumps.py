"""pstats dumps of profiled requests: which to keep, writing them, retention, bounds.

Requests queue their dumps (bounded); the flush thread writes them to
``<dump_dir>/<handler>/<UTC time>-<ms>ms.prof``.  Folders are as bounded as metric
series: at most ``max_handlers`` handler folders, the rest go to ``_other``; each folder
keeps its newest ``keep_per_handler`` dumps, and all of them together stay under
``max_dump_mb`` (oldest deleted first, emptied folders removed).
"""

from __future__ import annotations

import collections
import logging
import marshal
import time
from pathlib import Path
from typing import Any, Callable

from .._state import State
from ..config import ProfileConfig
from ..naming import sanitize

log = logging.getLogger("callwatch")

#: The folder of the handlers past ``max_handlers``.
OTHER = "_other"

#: Dumps waiting for the flush thread, at most: past it the oldest waiting ones give way
#: (a deque with maxlen), so a burst never grows memory and the newest dumps are kept.
MAX_QUEUED = 100


class DumpStore:
    def __init__(self, cfg: ProfileConfig, max_handlers: int,
                 watched_calls: Callable[[State], dict[str, int]] | None = None) -> None:
        self.cfg = cfg
        self.max_handlers = max_handlers
        self.watched_calls = watched_calls
        self.root = Path(cfg.dump_dir) if cfg.dump_dir else None
        self.queue: collections.deque[tuple[str, float, int, dict[Any, Any]]] = \
            collections.deque(maxlen=MAX_QUEUED)

    def wanted(self, elapsed_ns: int, state: State) -> bool:
        """Keep a dump of this profiled request?"""
        cfg = self.cfg
        if self.root is None:
            return False
        if cfg.slow_ms is not None and elapsed_ns >= cfg.slow_ms * 1e6:
            return True
        if cfg.call_budget and self.watched_calls is not None:
            calls = self.watched_calls(state)
            return any(calls.get(fn, 0) > limit for fn, limit in cfg.call_budget.items())
        return cfg.slow_ms is None and not cfg.call_budget  # no criteria: keep every one

    def add(self, handler: str, wall: float, elapsed_ns: int, stats: dict[Any, Any]) -> None:
        self.queue.append((handler, wall, elapsed_ns, stats))

    def clear(self) -> None:
        self.queue.clear()

    # -- flush thread ----------------------------------------------------------------

    def write(self) -> None:
        root = self.root
        if root is None or not self.queue:
            return
        folders = _folders(root)
        written: set[Path] = set()
        while self.queue:
            handler, wall, elapsed_ns, stats = self.queue.popleft()
            folder = sanitize(handler)
            if folder not in folders:
                folder = folder if len(folders) < self.max_handlers else OTHER
                folders.add(folder)
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(wall)) + f".{int(wall % 1 * 1000):03d}Z"
            path = root / folder / f"{stamp}-{elapsed_ns / 1e6:.0f}ms.prof"
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(marshal.dumps(stats))
            except OSError as e:
                log.warning("callwatch: cannot write profile dump %s (%s)", path, e)
                continue
            written.add(path.parent)
        for folder_path in written:
            self._retain(folder_path)
        self._cap_total(root)

    def _retain(self, folder: Path) -> None:
        dumps = sorted(folder.glob("*.prof"))
        for old in dumps[: max(0, len(dumps) - self.cfg.keep_per_handler)]:
            old.unlink(missing_ok=True)

    def _cap_total(self, root: Path) -> None:
        files = sorted(root.glob("*/*.prof"), key=lambda p: p.name)
        sizes = {p: _size(p) for p in files}
        total = sum(sizes.values())
        limit = self.cfg.max_dump_mb * 1024 * 1024
        for p in files:  # oldest first (names start with the UTC time)
            if total <= limit:
                break
            total -= sizes[p]
            p.unlink(missing_ok=True)
            try:
                p.parent.rmdir()  # only when it was the folder's last dump
            except OSError:
                pass


def _folders(root: Path) -> set[str]:
    try:
        return {p.name for p in root.iterdir() if p.is_dir()}
    except OSError:  # not made yet (or gone): the first dump makes it
        return set()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # another worker sharing dump_dir deleted it meanwhile
        return 0
