"""Runs ``job`` requests in worker processes started one way, and lets the workers end the
way multiprocessing ends them (``os._exit()`` after ``run()``); tests/test_process_end.py
reads the totals back from graphite-web.

    PROCEND_MODE=fork|spawn|forkserver|executor|executor-spawn|pool|billiard CALLWATCH_CONFIG=... \\
        PYTHONPATH=tests python tests/apps/procend_run.py REQUESTS

configure() is called where docs/processes.md says: in the parent, before the workers
start, for fork, Pool, billiard's Pool and ProcessPoolExecutor (their workers are forked);
at the top of the main module for spawn and forkserver (each of their children imports the
main module again, where ``__name__ == "__main__"`` is false); in the initializer for
executor-spawn.  Prints one line: the number of
distinct worker processes that served requests.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import sys

import callwatch
from apps import procend_work as work

MODE = os.environ["PROCEND_MODE"]  # not argv: a forkserver has its own argv
if MODE in ("spawn", "forkserver"):
    callwatch.configure(strict=True)


def processes(n: int) -> int:
    """Two rounds of two processes; the second round takes the slots the first one left."""
    ctx = multiprocessing.get_context(MODE)
    pids = set()
    for _ in range(2):
        procs = [ctx.Process(target=work.serve, args=(n,)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            if p.exitcode != 0:
                raise SystemExit(f"worker {p.pid} ended with {p.exitcode}")
            pids.add(p.pid)
    return len(pids)


def pool(n: int) -> int:
    """Workers recycled every two tasks, so most of them end mid-run."""
    with multiprocessing.get_context("fork").Pool(2, maxtasksperchild=2) as p:
        pids = p.map(work.job, range(n), chunksize=1)
        p.close()  # the workers end on their own; leaving the with block would SIGTERM them
        p.join()
    return len(set(pids))


def billiard_pool(n: int) -> int:
    """celery's prefork pool: billiard's Pool, workers recycled every two tasks.  Its
    workers call os._exit() from inside run(), past multiprocessing's exit function: the
    pool's on_process_exit (celery: the worker_process_shutdown signal) shuts down."""
    import billiard
    from billiard.pool import Pool

    p = Pool(2, maxtasksperchild=2, on_process_exit=work.shutdown_on_exit, context=billiard.get_context("fork"))
    try:
        pids = p.map(work.job, range(n), chunksize=1)
        p.close()
        p.join()
    finally:
        p.terminate()  # a no-op once joined; on a failure it stops the workers
    return len(set(pids))


def executor(n: int) -> int:
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as ex:
        pids = list(ex.map(work.job, range(n)))
    return len(set(pids))


def executor_spawn(n: int) -> int:
    """Spawned workers, each configured by the initializer (in its run(): after
    multiprocessing has set the child up).  Not recycled: max_tasks_per_child hangs the
    executor itself on 3.11.7 and 3.13.0, with or without callwatch."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx,
                                                initializer=callwatch.configure) as ex:
        pids = list(ex.map(work.job, range(n)))
    return len(set(pids))


def main() -> None:
    n = int(sys.argv[1])
    if MODE not in ("spawn", "forkserver", "executor-spawn"):
        callwatch.configure(strict=True)
    run = {"pool": pool, "billiard": billiard_pool, "executor": executor,
           "executor-spawn": executor_spawn}.get(MODE, processes)
    print(run(n), flush=True)


if __name__ == "__main__":
    main()
