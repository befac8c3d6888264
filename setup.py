"""Only for the optional C speedup; everything else is in pyproject.toml.

``optional=True``: without a compiler (or Python headers) the build goes on without it and
callwatch uses its pure-Python wrappers (same results, more CPU per watched call).
"""

from setuptools import Extension, setup

SOURCES = [f"src/callwatch/{name}.c" for name in
           ("_speedups", "_speedups_record", "_speedups_watched", "_speedups_handler")]

setup(ext_modules=[Extension("callwatch._speedups", SOURCES, depends=["src/callwatch/_speedups.h"], optional=True)])
