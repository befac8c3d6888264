"""The job tests/test_process_end.py runs in worker processes: one handler, ``job``, that
makes ``CALLS_PER_JOB`` calls of the watched ``fetch_row`` (YAML target
``apps.procend_work:fetch_row``)."""

from __future__ import annotations

import os

import callwatch

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
