"""The release: ``python -m build`` makes an sdist and a wheel that ``twine check`` passes,
and each installs into a clean venv (dependencies from PyPI, as pip does) and runs the
quick start: from the wheel and from the sdist with a C compiler (the C wrapper), and from
the sdist with no compiler on PATH (the pure-Python fallback).

The build runs once per module; each venv is made once, with ``python -m venv`` from the
running interpreter.  About 25 s in all on a 2-core machine.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from callwatch import _env

from conftest import TcpReceiver

tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with tomllib (Python 3.11+); scripts/test's "
                                                "first Python, which runs this test, is 3.11 by default")

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VERSION = PYPROJECT["version"]
#: The extras that are not runtime features, so not in ``all``.
NOT_IN_ALL = {"test", "bench", "all"}

pytestmark = [
    pytest.mark.skipif(
        _env.flag("CALLWATCH_PURE_PYTHON"),
        reason="builds and installs the package; runs once per CI run, under the Python that scripts/test runs "
               "without CALLWATCH_PURE_PYTHON (the installs themselves check both the C and the pure-Python "
               "wrapper)"),
    pytest.mark.timeout(300),
]


def run(cmd: list[str | Path], timeout: float, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``cmd``, which must succeed; its output is in the assertion message when it does not."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}\nstdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-4000:]}"
    return r


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: none of this test run's PYTHONPATH, venv or
    CALLWATCH_* variables, nor a compiler chosen by the caller's environment."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CC", "CXX", "LDSHARED", "CFLAGS", "LDFLAGS")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("CALLWATCH_")}
    env.update(extra)
    return env


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path
    log: str


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    r = run([sys.executable, "-m", "build", "--outdir", out, ROOT], timeout=240, env=clean_env())
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert [p.name for p in sdists] == [f"callwatch-{VERSION}.tar.gz"]
    assert len(wheels) == 1 and wheels[0].name.startswith(f"callwatch-{VERSION}-cp"), wheels
    return Dist(sdists[0], wheels[0], r.stdout + r.stderr)


@dataclass(frozen=True)
class Venv:
    path: Path
    install_log: str

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def site_packages(self) -> Path:
        [sp] = self.path.glob("lib/python*/site-packages")
        return sp


def make_venv(path: Path, what: str, env: dict[str, str]) -> Venv:
    run([sys.executable, "-m", "venv", path], timeout=120)
    venv = Venv(path, "")
    # -v: setuptools' own lines about the extension; no cache: a wheel that pip built from
    # the same sdist path under the other compiler setting must not be reused.
    r = run([venv.python, "-m", "pip", "install", "-v", "--no-cache-dir", "--disable-pip-version-check", what],
            timeout=300, env=env, cwd=path)
    return Venv(path, r.stdout + r.stderr)


@pytest.fixture(scope="module")
def wheel_venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    return make_venv(tmp_path_factory.mktemp("venv") / "wheel", str(dist.wheel), clean_env())


@pytest.fixture(scope="module")
def sdist_venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    return make_venv(tmp_path_factory.mktemp("venv") / "sdist", str(dist.sdist), clean_env())


@pytest.fixture(scope="module")
def sdist_no_compiler_venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    path = tmp_path_factory.mktemp("venv") / "sdist-no-cc"
    # PATH is the venv's bin only: pip, setuptools and the interpreter work, gcc and cc are
    # not there (as on a slim image), and setuptools' default compiler is "gcc" from PATH.
    no_cc = str(path / "bin")
    for cc in ("gcc", "cc", "clang", "x86_64-linux-gnu-gcc"):
        assert shutil.which(cc, path=no_cc) is None
    return make_venv(path, str(dist.sdist), clean_env(PATH=no_cc))


# --------------------------------------------------------------------------------------
# The artifacts


def test_twine_check_passes_strict(dist: Dist) -> None:
    r = run([sys.executable, "-m", "twine", "check", "--strict", dist.sdist, dist.wheel], timeout=120)
    assert r.stdout.count("PASSED") == 2, r.stdout


def test_the_build_warns_of_nothing_deprecated(dist: Dist) -> None:
    # e.g. the license table (setuptools >= 77 asks for an SPDX string) or license classifiers
    assert "Deprecat" not in dist.log, [line for line in dist.log.splitlines() if "Deprecat" in line]


def test_the_metadata_is_the_pyproject_s(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as z:
        meta = email.parser.Parser(policy=email.policy.compat32).parsestr(
            z.read(f"callwatch-{VERSION}.dist-info/METADATA").decode())
    assert meta["Name"] == "callwatch" and meta["Version"] == VERSION
    assert meta["License-Expression"] == "MIT" and meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.10"
    assert meta.get_all("Classifier") == PYPROJECT["classifiers"]
    assert meta.get("Project-URL") is None  # no homepage or repository is published yet
    extras = set(PYPROJECT["optional-dependencies"])
    assert set(meta.get_all("Provides-Extra")) == extras
    # `all` is every runtime extra: one added later without `all` fails here
    [all_req] = PYPROJECT["optional-dependencies"]["all"]
    named = re.fullmatch(r"callwatch\[([a-z,]+)\]", all_req)
    assert named, all_req
    assert set(named.group(1).split(",")) == extras - NOT_IN_ALL == {"profile", "grafana", "memory", "flask",
                                                                      "django"}
    assert meta.get_all("Requires-Dist")[:3] == ["graphyte>=1.7.1", "PyYAML>=6.0", "ddsketch>=3.0"]


def test_the_sdist_has_the_sources_and_the_wheel_the_extension(dist: Dist) -> None:
    with tarfile.open(dist.sdist) as t:
        sdist = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    c_files = {f"src/callwatch/{n}" for n in ("_speedups.c", "_speedups_record.c", "_speedups_watched.c",
                                              "_speedups_handler.c", "_speedups.h")}
    assert c_files <= sdist
    assert {"LICENSE", "README.md", "pyproject.toml", "setup.py", "src/callwatch/py.typed",
            "src/callwatch/demo/callwatch.yaml"} <= sdist
    assert not [n for n in sdist if n.startswith("tests/") or n.endswith((".so", ".pyc"))]
    with zipfile.ZipFile(dist.wheel) as z:
        wheel = set(z.namelist())
    assert [n for n in wheel if n.startswith("callwatch/_speedups.cpython-") and n.endswith(".so")]
    assert {"callwatch/py.typed", "callwatch/_speedups.pyi", "callwatch/demo/callwatch.yaml",
            f"callwatch-{VERSION}.dist-info/licenses/LICENSE"} <= wheel
    assert not [n for n in wheel if n.endswith((".c", ".h"))]
    # every module of the source tree is in the wheel
    modules = {str(p.relative_to(ROOT / "src")) for p in (ROOT / "src" / "callwatch").rglob("*.py")}
    assert modules <= wheel, modules - wheel


# --------------------------------------------------------------------------------------
# The installs

SHOP = '''\
class Database:
    def get_user(self, uid):
        return {"id": uid}
'''

#: The quick start as a user writes it, with the receiver's port as its argument; it prints
#: what it found out about the installed package as one JSON line.
QUICK_START = '''\
import json, sys
import callwatch
import shop

db = shop.Database()


@callwatch.handler("login")
def login(uid):
    for _ in range(uid + 1):
        db.get_user(uid)


runtime = callwatch.configure({
    "graphite": {"host": "127.0.0.1", "port": int(sys.argv[1]), "interval": 60, "prefix": "quickstart"},
    "naming": {"host": "web1", "worker": "none"},
    "watch": [{"target": "shop:Database.get_user", "group": "db"}],
}, strict=True)
for uid in range(3):
    login(uid)
kinds = {"watched": type(shop.Database.__dict__["get_user"]), "handler": type(login)}
callwatch.shutdown()
try:
    import callwatch._speedups
    speedups = callwatch._speedups.__file__
except ImportError:
    speedups = None
print(json.dumps({
    "configured": runtime is not None,
    **{k: t.__module__ + "." + t.__qualname__ for k, t in kinds.items()},
    "speedups": speedups,
    "file": callwatch.__file__,
    "version": callwatch.__version__,
}))
'''

#: The types of the watched method and of the handler under each wrapper.
C_WRAPPERS = {"watched": "callwatch._speedups.Watched", "handler": "callwatch._speedups.Handler"}
PURE_WRAPPERS = {"watched": "builtins.function", "handler": "builtins.function"}

BASE = "quickstart.web1.handler.login"
#: The lines whose values are exact: 3 requests making 1, 2 and 3 calls.
EXACT = {
    f"{BASE}.requests": "3",
    f"{BASE}.errors": "0",
    **{f"{BASE}.{part}.{m}": v for part in ("group.db", "watch.Database_get_user")
       for m, v in (("calls", "6"), ("calls_per_request.mean", "2.0"), ("calls_per_request.max", "3"))},
    "quickstart.web1.callwatch.internal_errors": "0",
}
#: The lines whose values are times and shares (a number >= 0).
TIMED = {f"{BASE}.response_ms.{s}" for s in ("mean", "max", "p50", "p90", "p99")} | {
    f"{BASE}.{part}.{m}" for part in ("group.db", "watch.Database_get_user")
    for m in ("ms", "ms_per_request.mean", "ms_per_request.max", "share")}


def quick_start(venv: Venv, tmp_path: Path, receiver: TcpReceiver, **env: str) -> dict[str, object]:
    """Run the quick start in ``venv`` against ``receiver``; check every line it received."""
    app = tmp_path / "app"
    app.mkdir(exist_ok=True)
    (app / "shop.py").write_text(SHOP)
    (app / "quickstart.py").write_text(QUICK_START)
    receiver.received.clear()
    r = run([venv.python, app / "quickstart.py", str(receiver.port)], timeout=60, cwd=app,
            env=clean_env(**env))
    deadline = time.monotonic() + 10
    while not receiver.received and time.monotonic() < deadline:  # the handler appends at EOF
        time.sleep(0.02)
    lines = receiver.data.decode().splitlines()
    points = {}
    stamps = set()
    for line in lines:
        name, value, stamp = line.split(" ")
        points[name] = value
        stamps.add(int(stamp))
    assert len(points) == len(lines), "a metric was sent twice"
    assert {n: points.get(n) for n in EXACT} == EXACT
    handler_lines = {n for n in points if n.startswith(BASE + ".")}
    assert handler_lines == (set(EXACT) | TIMED) - {"quickstart.web1.callwatch.internal_errors"}
    assert all(float(points[n]) >= 0 for n in TIMED), {n: points[n] for n in TIMED}
    [stamp] = stamps
    assert stamp % 60 == 0 and abs(stamp - time.time()) < 120
    found: dict[str, object] = json.loads(r.stdout)
    assert found["configured"] is True
    assert str(found["file"]).startswith(str(venv.site_packages() / "callwatch")), found["file"]
    assert found["version"] == VERSION
    return found


def wrappers(found: dict[str, object]) -> dict[str, object]:
    return {k: found[k] for k in ("watched", "handler")}


def test_the_wheel_installs_and_uses_the_c_wrapper(wheel_venv: Venv, tmp_path: Path,
                                                   tcp_receiver: TcpReceiver) -> None:
    found = quick_start(wheel_venv, tmp_path, tcp_receiver)
    assert wrappers(found) == C_WRAPPERS
    assert str(found["speedups"]).startswith(str(wheel_venv.site_packages() / "callwatch" / "_speedups.cpython-"))
    # CALLWATCH_PURE_PYTHON=1 at run time: the same install uses the pure-Python wrapper
    assert wrappers(quick_start(wheel_venv, tmp_path, tcp_receiver, CALLWATCH_PURE_PYTHON="1")) == PURE_WRAPPERS


def test_the_sdist_with_a_compiler_builds_the_c_wrapper(sdist_venv: Venv, tmp_path: Path,
                                                        tcp_receiver: TcpReceiver) -> None:
    assert "building 'callwatch._speedups' extension" in sdist_venv.install_log
    assert 'building extension "callwatch._speedups" failed' not in sdist_venv.install_log
    assert wrappers(quick_start(sdist_venv, tmp_path, tcp_receiver)) == C_WRAPPERS
    assert list((sdist_venv.site_packages() / "callwatch").glob("_speedups.cpython-*.so"))


def test_the_sdist_without_a_compiler_installs_the_pure_python_wrapper(
        sdist_no_compiler_venv: Venv, tmp_path: Path, tcp_receiver: TcpReceiver) -> None:
    # setuptools tried, failed and went on (optional=True in setup.py)
    assert re.search(r"""building extension "callwatch._speedups" failed: .*'gcc'""",
                     sdist_no_compiler_venv.install_log), sdist_no_compiler_venv.install_log[-4000:]
    assert not list((sdist_no_compiler_venv.site_packages() / "callwatch").glob("_speedups*.so"))
    found = quick_start(sdist_no_compiler_venv, tmp_path, tcp_receiver)
    assert (wrappers(found), found["speedups"]) == (PURE_WRAPPERS, None)


@pytest.mark.parametrize("which", ["wheel_venv", "sdist_no_compiler_venv"])
def test_callwatch_version(which: str, request: pytest.FixtureRequest) -> None:
    venv: Venv = request.getfixturevalue(which)
    r = run([venv.path / "bin" / "callwatch", "--version"], timeout=60, env=clean_env(), cwd=venv.path)
    assert r.stdout == f"callwatch {VERSION}\n"


def test_the_all_extra_resolves_to_every_runtime_extra(wheel_venv: Venv, dist: Dist) -> None:
    report = wheel_venv.path / "all.json"
    run([wheel_venv.python, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
         "--report", report, f"callwatch[all] @ {dist.wheel.as_uri()}"], timeout=300, env=clean_env())
    names = {item["metadata"]["name"].lower().replace("_", "-") for item in json.loads(report.read_text())["install"]}
    wanted = {re.split(r"[<>=\[ ;]", req)[0].lower() for extra, reqs in PYPROJECT["optional-dependencies"].items()
              if extra not in NOT_IN_ALL for req in reqs}
    assert wanted == {"yappi", "gprof2dot", "grafanalib", "objgraph", "flask", "django"}
    assert wanted <= names, wanted - names
    assert not names & {"pytest", "mypy", "prometheus-client", "build", "twine"}
