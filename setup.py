"""Only for the optional C speedup; everything else is in pyproject.toml.

``optional=True``: without a compiler (or Python headers) the build goes on without it and
callwatch uses its pure-Python wrappers (same results, more CPU per watched call).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("callwatch._speedups", ["src/callwatch/_speedups.c"], optional=True)])
