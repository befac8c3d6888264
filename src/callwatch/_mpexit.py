"""The final flush of a process that multiprocessing ends with ``os._exit()``.

A child started by ``multiprocessing`` (fork, forkserver; and so ``Pool``,
``ProcessPoolExecutor`` and servers built on ``Process``) never reaches the interpreter's
exit: ``BaseProcess._bootstrap`` returns into ``os._exit()``, so ``atexit`` handlers do not
run (on 3.13 the fork and forkserver children clear them first).  What multiprocessing does
run on the way out is its own registry of ``util.Finalize`` objects, through
``util._exit_function()``.  So the runtime's exit callback is registered there too.

Two details decide where and when:

* ``_bootstrap`` clears the finalizer registry inherited from the parent *after*
  ``os.register_at_fork`` hooks have run, then calls the ``util.register_after_fork``
  hooks.  A finalizer is therefore (re-)made from such a hook, which runs in every
  multiprocessing child, fork, forkserver and spawn alike; and directly at ``configure()``
  for a process that configures inside its ``run()`` (a target or a pool initializer).
* multiprocessing is only used if the host has imported it: this module looks in
  ``sys.modules`` and never imports it, so a process without multiprocessing pays nothing.

billiard (celery's prefork pool) shares this registry, but its pool workers call
``os._exit()`` from inside ``run()``, before it is run: there the pool's
``on_process_exit`` has to call ``shutdown()`` (docs/processes.md).

Each arming is a dictionary lookup or two; one finalizer and one after-fork hook per
process at most.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

#: Finalizers run highest priority first; ours runs after the process's own finalizers and
#: after multiprocessing has joined this process's children, so work they finish is counted.
EXIT_PRIORITY = -100


class ExitHook:
    """Runs ``callback`` when multiprocessing ends this process (see the module docstring)."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._finalizer: Any = None  # a multiprocessing.util.Finalize
        self._pid = 0
        # the after-fork hook lives in util's registry, which a fork child inherits with us
        self._after_fork_hooked = False

    def arm(self) -> None:
        """Make sure the callback runs at multiprocessing's exit of this process (idempotent)."""
        util = sys.modules.get("multiprocessing.util")
        if util is None:
            return
        if not self._after_fork_hooked:
            self._after_fork_hooked = True
            util.register_after_fork(self, ExitHook._after_multiprocessing_fork)
        if self._pid != os.getpid() or not self._finalizer.still_active():
            self._finalizer = util.Finalize(None, self._callback, exitpriority=EXIT_PRIORITY)
            self._pid = os.getpid()

    def _after_multiprocessing_fork(self) -> None:
        # the child's registry was just cleared: the parent's finalizer (if any) is gone
        self.arm()
