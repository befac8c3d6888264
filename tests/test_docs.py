"""The docs stay true where that is cheap to check.

- Every fenced ```yaml block in README.md and docs/ whose top-level keys are callwatch
  config sections loads with callwatch's own loader (callwatch.config.load): a key that
  was renamed or a value out of range in an example fails here, naming the file and line.
- The README's quick start runs as written, in a temp dir, and leaves the pstats dumps it
  says it leaves (a snippet whose dump criteria never match a fast app fails here).
- README.md stays short (the reference lives in docs/).
- Every public name of the modules docs/api.md renders has a docstring (the page would
  show it bare): the failure lists each one missing.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from callwatch import config

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
SECTIONS = {"enabled", "graphite", "naming", "handlers", "watch", "spikes", "alerts", "profile", "memory"}


def fenced(path: Path, lang: str) -> list[tuple[int, str]]:
    """(line of the fence, body) of every ```lang block of the file."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(2))
            for m in FENCE.finditer(text) if m.group(1) == lang]


def config_blocks() -> list[tuple[str, str]]:
    blocks = []
    for path in DOC_FILES:
        for line, body in fenced(path, "yaml"):
            keys = set(re.findall(r"^([A-Za-z_]+):", body, re.M))
            if keys and keys <= SECTIONS:
                blocks.append((f"{path.relative_to(ROOT)}:{line}", body))
    return blocks


def test_the_docs_have_config_examples() -> None:
    # The check below must have something to check: the README's quick start and the
    # watching, profiling and memory pages all show config.
    names = {where.split(":")[0] for where, _ in config_blocks()}
    assert {"README.md", "docs/watching.md", "docs/profiling.md", "docs/memory.md"} <= names


@pytest.mark.parametrize(("where", "body"), config_blocks(), ids=[w for w, _ in config_blocks()])
def test_config_example_loads(where: str, body: str, tmp_path: Path) -> None:
    path = tmp_path / "example.yaml"
    path.write_text(body, encoding="utf-8")
    try:
        config.load(path, env={})
    except config.ConfigError as e:
        pytest.fail(f"{where}: the example does not load:\n{e}")


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 160, f"README.md has {lines} lines; move reference text into docs/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_readme_quick_start_runs_and_dumps(tmp_path: Path) -> None:
    readme = ROOT / "README.md"
    (_, app), = [b for b in fenced(readme, "python") if "callwatch.configure(\"callwatch.yaml\")" in b[1]]
    (_, yml), = [b for b in fenced(readme, "yaml") if "dump_dir: profiles" in b[1]]
    (tmp_path / "app.py").write_text(app, encoding="utf-8")
    (tmp_path / "callwatch.yaml").write_text(yml, encoding="utf-8")
    # Nothing listens on the port: the README says the app warns once and carries on.
    env = {"PATH": "/usr/bin:/bin", "CALLWATCH_GRAPHITE": f"127.0.0.1:{free_port()}"}
    run = subprocess.run([sys.executable, "app.py"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("cannot send to Graphite") == 1, run.stderr
    dumps = sorted((tmp_path / "profiles" / "login").glob("*.prof"))
    assert dumps, f"the quick start left no dump in profiles/login/; stderr:\n{run.stderr}"
    stats = subprocess.run([sys.executable, "-m", "callwatch", "stats", str(dumps[0]), "--json"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert stats.returncode == 0, stats.stderr
    assert "get_user" in stats.stdout


API_MODULE = re.compile(r"^::: ([\w.]+)\s*$", re.M)


def api_modules() -> list[str]:
    """The modules docs/api.md renders (its ``::: module`` lines)."""
    return API_MODULE.findall((ROOT / "docs" / "api.md").read_text(encoding="utf-8"))


def public_names(module: ModuleType) -> list[tuple[str, Any]]:
    """(name, object) of what the module makes public: its __all__, else what it defines."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, v in vars(module).items()
                 if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__]
    return [(n, getattr(module, n)) for n in names]


def has_doc(obj: Any) -> bool:
    doc = getattr(obj, "__doc__", None)
    if not (isinstance(doc, str) and doc.strip()) and callable(obj):
        doc = getattr(inspect.unwrap(obj), "__doc__", None)  # a decorator that lost it
    return isinstance(doc, str) and bool(doc.strip())


def class_has_doc(cls: type) -> bool:
    doc = vars(cls).get("__doc__")
    if not (isinstance(doc, str) and doc.strip()):
        return False
    # dataclasses and NamedTuple make up "Name(field, ...)" for a class written without one
    made_up = (dataclasses.is_dataclass(cls) or issubclass(cls, tuple)) and \
        re.fullmatch(rf"{re.escape(cls.__name__)}\(.*\)", doc, re.S) is not None
    return not made_up


def generated(func: Any) -> bool:
    """Not written in a module: an @overload stub (typing's), a dataclass-generated method
    (compiled from a string)."""
    code = getattr(inspect.unwrap(func), "__code__", None)
    return getattr(func, "__module__", None) == "typing" or (code is not None and code.co_filename.startswith("<"))


def undocumented_members(cls: type) -> list[str]:
    """The public methods, properties, class and static methods the class itself defines
    without a docstring (a property's is its getter's)."""
    missing = []
    for name, attr in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(attr, (classmethod, staticmethod)):
            attr = attr.__func__
        if isinstance(attr, property):
            ok = has_doc(attr.fget if attr.fget is not None else attr)
        elif inspect.isroutine(attr):
            ok = generated(attr) or has_doc(attr)
        else:
            continue  # constants, fields, enum members, nested classes
        if not ok:
            missing.append(name)
    return missing


def undocumented(module_names: list[str]) -> list[str]:
    """Every public class and function of the modules (and every public member the classes
    define) without a docstring, fully qualified; each object once, under the first module
    that exports it."""
    missing: list[str] = []
    seen: set[int] = set()
    for module_name in module_names:
        module = importlib.import_module(module_name)
        for name, obj in public_names(module):
            if not (inspect.isclass(obj) or inspect.isroutine(obj)) or id(obj) in seen:
                continue
            seen.add(id(obj))
            where = f"{module_name}.{name}"
            if inspect.isclass(obj):
                if not class_has_doc(obj):
                    missing.append(where)
                missing += [f"{where}.{member}" for member in undocumented_members(obj)]
            elif not generated(obj) and not has_doc(obj):
                missing.append(where)
    return missing


CHECKED = '''\
"""A module the docstring check must find every gap in."""
import typing
from dataclasses import dataclass
from os.path import join

__all__ = ["CONST", "Bare", "Fields", "NoDoc", "Fine", "bare", "over", "stub", "join"]
CONST = 1


class Bare:
    pass


@dataclass
class Fields:
    """Documented; its members are not."""
    x: int = 0

    def method(self) -> int:
        return self.x

    @property
    def prop(self) -> int:
        return 1

    @classmethod
    def make(cls) -> "Fields":
        return cls()

    @staticmethod
    def util() -> None:
        pass

    def _private(self) -> None:
        pass


@dataclass(order=True)
class NoDoc:
    x: int


class Fine:
    """Documented, and so is every public member (a setter needs none)."""

    def ok(self) -> None:
        """Yes."""

    @property
    def p(self) -> int:
        """Yes."""
        return 1

    @p.setter
    def p(self, v: int) -> None:
        pass


def bare() -> None:
    pass


@typing.overload
def over(x: int) -> int: ...
@typing.overload
def over(x: str) -> str: ...
def over(x: typing.Any) -> typing.Any:
    """The implementation documents every overload."""
    return x


@typing.overload
def stub() -> None: ...
'''


def test_the_docstring_check_finds_every_gap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cw_doc_all.py").write_text(CHECKED, encoding="utf-8")
    # without __all__: what the module defines, not what it imports
    (tmp_path / "cw_doc_bare.py").write_text("from os.path import join\n\n\ndef f() -> None:\n    pass\n\n\n"
                                             "def _g() -> None:\n    pass\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert undocumented(["cw_doc_all", "cw_doc_bare"]) == [
        "cw_doc_all.Bare", "cw_doc_all.Fields.method", "cw_doc_all.Fields.prop", "cw_doc_all.Fields.make",
        "cw_doc_all.Fields.util", "cw_doc_all.NoDoc", "cw_doc_all.bare", "cw_doc_bare.f"]


def test_the_api_page_renders_the_public_modules() -> None:
    assert {"callwatch", "callwatch.export", "callwatch.explain", "callwatch.report"} <= set(api_modules())


def test_every_public_name_has_a_docstring() -> None:
    # The API page renders these docstrings: a name without one shows up bare.
    missing = undocumented(api_modules())
    assert not missing, f"{len(missing)} public names have no docstring:\n" + "\n".join(missing)
