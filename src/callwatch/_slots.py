"""Worker slots: one small, stable number per live process, for metric names.

Graphite keeps the last value written for a name and timestamp, so two processes that send
``...login.requests`` for the same interval overwrite each other.  Each process therefore
sends under its own *slot* (``web1_w0``, ``web1_w1``...).  A slot is the lowest-numbered
lock file in the slot directory that no live process holds (``flock``; the kernel releases
it when the process dies), so a restarted worker takes the slot its predecessor left and
the number of series stays bounded by the number of workers running at once -- no pid in
any name.

A process that leaves in the middle of an interval sends that partial interval, then
writes it (as JSON) into its slot file.  The next process to take the slot in the same
interval merges it back, so when it sends that interval the total includes both.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any, Protocol

from .errors import SlotError

log = logging.getLogger("callwatch")

MAX_SLOTS = 4096
#: Fallback names per slot key (``p0``..``p63``): at most this many series per host
#: while the slot directory cannot be used.
FALLBACK_SLOTS = 64


def default_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"callwatch-slots-{os.getuid()}"




def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o022:
        raise SlotError(f"{path} is not a private directory of this user (owner {st.st_uid}, "
                        f"mode {stat.S_IMODE(st.st_mode):o}); set naming.slot_dir to one")


class WorkerSlot(Protocol):
    """What the runtime needs of a slot: its name in metric paths, and the hand-off."""

    @property
    def name(self) -> str: ...
    @property
    def where(self) -> str: ...
    def claim(self) -> int: ...
    def release(self) -> None: ...
    def forget_after_fork(self) -> None: ...
    def take_handoff(self) -> dict[str, Any] | None: ...
    def leave_handoff(self, data: dict[str, Any]) -> None: ...


def take(directory: Path, key: str) -> tuple[WorkerSlot, Exception | None]:
    """A slot in ``directory``, or else a fallback name; with the error that forced it."""
    slot = Slot(directory, key)
    try:
        slot.claim()
        return slot, None
    except (OSError, SlotError) as e:
        fallback = FallbackSlot(key)
        fallback.claim()
        return fallback, e


class Slot:
    """The slot this process holds, with its lock file open."""

    def __init__(self, directory: Path, key: str) -> None:
        self.directory = directory
        self.key = re.sub(r"[^A-Za-z0-9_.-]", "_", key) or "_"
        self.number = -1
        self._fd = -1

    @property
    def path(self) -> Path:
        return self.directory / f"{self.key}.{self.number}.slot"

    @property
    def name(self) -> str:
        return f"w{self.number}" if self.number >= 0 else ""

    @property
    def where(self) -> str:
        return str(self.path)

    def claim(self) -> int:
        _private_dir(self.directory)
        for n in range(MAX_SLOTS):
            path = self.directory / f"{self.key}.{n}.slot"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    continue
                raise
            self._fd, self.number = fd, n
            return n
        raise SlotError(f"all {MAX_SLOTS} slots in {self.directory} are taken")

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def forget_after_fork(self) -> None:
        """In a forked child: the inherited descriptor shares the parent's lock; drop it
        (closing our copy leaves the parent's lock in place)."""
        self.release()
        self.number = -1

    # -- the partial interval handed to the next holder --------------------------

    def take_handoff(self) -> dict[str, Any] | None:
        """Read and clear what the previous holder left (None when nothing)."""
        if self._fd < 0:
            return None
        try:
            os.lseek(self._fd, 0, os.SEEK_SET)
            raw = b""
            while chunk := os.read(self._fd, 1 << 20):
                raw += chunk
            os.ftruncate(self._fd, 0)
            if not raw.strip():
                return None
            data = json.loads(raw)
            return data if isinstance(data, dict) else None
        except (OSError, ValueError) as e:
            log.warning("callwatch: ignoring the unreadable hand-off in %s (%s)", self.path, e)
            return None

    def leave_handoff(self, data: dict[str, Any]) -> None:
        if self._fd < 0:
            return
        try:
            raw = json.dumps(data, separators=(",", ":")).encode()
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
            view = memoryview(raw)
            while view:
                view = view[os.write(self._fd, view):]
        except (OSError, TypeError, ValueError) as e:
            log.warning("callwatch: could not write the hand-off to %s (%s)", self.path, e)


class FallbackSlot:
    """A worker name for when the slot directory cannot be used: ``p<n>``, n < FALLBACK_SLOTS.

    ``n`` is held by binding an abstract Unix socket (Linux; no file, no permissions; the
    kernel frees the name when the process dies), so two live processes never share a
    name.  The search starts at the pid modulo FALLBACK_SLOTS rather than at 0, so that a
    worker restarted within an interval rarely takes the name its predecessor has just
    sent a partial interval under (there is no hand-off file to merge it here).  Where
    abstract sockets do not exist, or all the names are held: ``pid<pid>``, unique but not
    bounded.
    """

    def __init__(self, key: str) -> None:
        self._prefix = b"\0callwatch-" + hashlib.sha1(key.encode()).hexdigest()[:20].encode() + b"-"
        self.number = -1
        self.name = ""
        self._sock: socket.socket | None = None

    @property
    def where(self) -> str:
        return f"worker name {self.name}"

    def claim(self) -> int:
        pid = os.getpid()
        for i in range(FALLBACK_SLOTS):
            n = (pid + i) % FALLBACK_SLOTS
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            except OSError:
                break  # no descriptor to spare: the pid still gives a unique name
            try:
                sock.bind(self._prefix + str(n).encode())
            except OSError as e:
                sock.close()
                if e.errno == errno.EADDRINUSE:
                    continue
                break  # no abstract sockets here
            self._sock, self.number, self.name = sock, n, f"p{n}"
            return n
        self.number, self.name = pid, f"pid{pid}"
        return pid

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None

    def forget_after_fork(self) -> None:
        """In a forked child: close our copy of the parent's socket (the parent keeps its name)."""
        self.release()
        self.number, self.name = -1, ""

    def take_handoff(self) -> dict[str, Any] | None:
        return None

    def leave_handoff(self, data: dict[str, Any]) -> None:
        pass
