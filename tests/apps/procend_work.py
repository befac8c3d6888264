"""The job tests/test_process_end.py runs in worker processes: one handler, ``job``, that
makes ``CALLS_PER_JOB`` calls of the watched ``fetch_row`` (YAML target
``apps.procend_work:fetch_row``)."""

from __future__ import annotations

import os
import signal
import time

import callwatch
from callwatch import _runtime

CALLS_PER_JOB = 3


def fetch_row(i: int) -> int:
    return i


@callwatch.handler("job")
def job(i: int) -> int:
    for _ in range(CALLS_PER_JOB):
        fetch_row(i)
    return os.getpid()


def serve(n: int) -> None:
    """A multiprocessing.Process target: n requests, then return (and os._exit)."""
    for i in range(n):
        job(i)


def shutdown_on_exit(pid: int, exitcode: int) -> None:
    """billiard's ``Pool(on_process_exit=...)``: runs in the worker just before its os._exit()."""
    callwatch.shutdown()


def serve_then_die(sent: int, unsent: int) -> None:
    """``sent`` requests, wait until a flush has sent them, ``unsent`` more, then SIGKILL:
    what the kernel kills is what the process had not sent yet."""
    rt = _runtime.active()
    assert rt is not None
    first = rt.exporter.stats.flushes
    serve(sent)
    deadline = time.monotonic() + 30
    # two flushes after the start: the interval that saw the last request has been sent
    while rt.exporter.stats.flushes < first + 2 or rt.exporter.buffered:
        if time.monotonic() > deadline:
            raise SystemExit("no flush in 30 s")
        time.sleep(0.05)
    serve(unsent)
    os.kill(os.getpid(), signal.SIGKILL)
