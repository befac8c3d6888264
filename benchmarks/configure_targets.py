"""Seconds to prepare and patch a configuration that watches N functions (issue 11 #6).

    python benchmarks/configure_targets.py [--sizes 10,100,1000]

For each N it writes a module of N plain functions to a temporary directory, then times
``callwatch.config.prepare()`` (load, import, glob resolution), ``_patching.patch()``
(wrappers, and the module-level copies found in sys.modules) and ``Patches.undo()``.
1,000 is the cap on watched functions (callwatch.config.MAX_WATCHED): a glob matching
more is refused by prepare(), which is timed too, at 10,000.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="10,100,1000")
    args = p.parse_args(argv)
    from callwatch import _patching
    from callwatch.config import ConfigError, prepare

    with tempfile.TemporaryDirectory() as d:
        sys.path.insert(0, d)
        sizes = [int(x) for x in args.sizes.split(",")]
        for n in [*sizes, 10_000]:
            name = f"cwbench_many_{n}"
            Path(d, f"{name}.py").write_text("".join(f"def f{i}():\n    return {i}\n" for i in range(n)))
            t0 = time.perf_counter()
            try:
                prepared = prepare({"watch": [f"{name}:f*"]}, env={})
            except ConfigError:
                print(f"{n:>6} functions: refused by prepare() in {time.perf_counter() - t0:.3f} s")
                continue
            t1 = time.perf_counter()
            patches = _patching.patch(prepared.resolved)
            t2 = time.perf_counter()
            patches.undo()
            t3 = time.perf_counter()
            print(f"{n:>6} functions: prepare {t1 - t0:.3f} s, patch {t2 - t1:.3f} s, undo {t3 - t2:.3f} s "
                  f"({len(sys.modules)} modules searched for copies)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
