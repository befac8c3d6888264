"""Resolving YAML targets, patching them, and putting everything back."""

from __future__ import annotations

import pytest

import callwatch
from callwatch import _core, _patching, _targets
from callwatch.config import WatchTarget

import cwsample.storage as st
import cwsample.views as views


def resolve(*targets: str | WatchTarget) -> tuple[list[_targets.Resolved], list[str]]:
    specs = [t if isinstance(t, WatchTarget) else WatchTarget(t, where="F:1") for t in targets]
    found, problems = _targets.resolve(specs)
    return found, [str(p) for p in problems]


def test_every_kind_of_callable_resolves() -> None:
    found, problems = resolve(
        "cwsample.storage:get_user",
        "cwsample.storage:Storage.get_table",
        "cwsample.storage:Storage.get_static",
        "cwsample.storage:Storage.get_cls",
        "cwsample.storage:Storage.Nested.get_deep",
        "cwsample.storage:SubStorage.get_player",
    )
    assert problems == []
    assert [(r.qualname, r.kind, r.attr, r.name) for r in found] == [
        ("get_user", "function", "get_user", "get_user"),
        ("Storage.get_table", "method", "get_table", "Storage_get_table"),
        ("Storage.get_static", "staticmethod", "get_static", "Storage_get_static"),
        ("Storage.get_cls", "classmethod", "get_cls", "Storage_get_cls"),
        ("Storage.Nested.get_deep", "method", "get_deep", "Storage_Nested_get_deep"),
        ("SubStorage.get_player", "method", "get_player", "SubStorage_get_player"),
    ]


def test_glob_matches_public_names_in_classes_and_module() -> None:
    found, problems = resolve("cwsample.storage:*.get_*", "cwsample.storage:get_*")
    assert problems == []
    assert sorted(r.qualname for r in found) == [
        "Storage.Nested.get_deep", "Storage.get_cls", "Storage.get_player", "Storage.get_players",
        "Storage.get_static", "Storage.get_table", "get_user", "get_users",
    ]


def test_glob_skips_private_names_unless_asked() -> None:
    found, _ = resolve("cwsample.storage:*")
    assert "_private_helper" not in {r.qualname for r in found}
    found, _ = resolve("cwsample.storage:_private_*")
    assert [r.qualname for r in found] == ["_private_helper"]


@pytest.mark.parametrize("target, message", [
    ("nosuchmodule.x:f", "F:1: target: module 'nosuchmodule' not found (from 'nosuchmodule.x:f'). Fix: check the "
     "spelling, and that the application's directory is on sys.path (check-config: --path DIR)"),
    ("cwsample.nosuch:f", "F:1: target: module 'cwsample.nosuch' not found (from 'cwsample.nosuch:f'). Fix: check "
     "the spelling, and that the application's directory is on sys.path (check-config: --path DIR)"),
    ("cwsample.storage:get_usr", "F:1: target: 'cwsample.storage' has no attribute 'get_usr' (from "
     "'cwsample.storage:get_usr'). Fix: did you mean 'get_user' or 'get_users'?"),
    ("cwsample.storage:Storage.get_tabel", "F:1: target: 'Storage' has no attribute 'get_tabel' (from "
     "'cwsample.storage:Storage.get_tabel'). Fix: did you mean 'get_table'?"),
    ("cwsample.storage:Nope.get", "F:1: target: 'cwsample.storage' has no attribute 'Nope' (from "
     "'cwsample.storage:Nope.get'). Fix: check the spelling and the module path"),
    ("cwsample.storage:*.zap_*", "F:1: target: the glob 'cwsample.storage:*.zap_*' matches no function. Fix: check "
     "the pattern against the names in cwsample.storage (names starting with '_' only match a pattern part "
     "starting with '_')"),
    ("cwsample.storage:NOT_CALLABLE", "F:1: target: 'cwsample.storage:NOT_CALLABLE' is not callable (it is int). "
     "Fix: point the target at a function or method"),
    ("cwsample.storage:Storage", "F:1: target: 'cwsample.storage:Storage' is a class, not a function. Fix: watch "
     "its methods instead, e.g. 'Class.method' or 'Class.*'"),
    ("cwsample.storage:Storage.prop", "F:1: target: 'cwsample.storage:Storage.prop' is a property or descriptor, "
     "not a function. Fix: watch the function it calls instead"),
    ("cwsample.broken:f", "F:1: target: importing 'cwsample.broken' raised RuntimeError: this module fails on "
     "import. Fix: fix the error in that module (import it by hand to see the traceback)"),
    ("sqlite3:Cursor.execute", "F:1: target: 'sqlite3:Cursor.execute' belongs to the built-in type 'Cursor', "
     "which cannot be patched. Fix: watch the Python function that calls it instead"),
])
def test_resolution_errors(target: str, message: str) -> None:
    found, problems = resolve(target)
    assert (found, problems) == ([], [message])


def test_two_functions_with_one_metric_name_is_an_error() -> None:
    _, problems = resolve(WatchTarget("cwsample.storage:get_user", where="F:1"),
                          WatchTarget("cwsample.storage:Storage.get_table", name="get_user", where="F:2"))
    assert problems == ["F:2: target: 'cwsample.storage:Storage.get_table' would get the metric name 'get_user', "
                        "already used by 'cwsample.storage:get_user' (F:1). Fix: give one of them a different 'name:'"]


def test_the_same_function_from_two_targets_is_watched_once() -> None:
    found, problems = resolve("cwsample.storage:get_user", "cwsample.storage:get_*")
    assert problems == []
    assert [r.qualname for r in found] == ["get_user", "get_users"]


def test_patch_counts_calls_and_undo_restores_everything() -> None:
    originals = {
        "get_user": st.get_user, "views.get_user": views.get_user,
        "get_table": st.Storage.__dict__["get_table"], "get_static": st.Storage.__dict__["get_static"],
        "get_cls": st.Storage.__dict__["get_cls"],
    }
    found, problems = resolve(
        WatchTarget("cwsample.storage:get_user", group="db", where="F:1"),
        WatchTarget("cwsample.storage:Storage.get_*", group="db", where="F:2"),
        WatchTarget("cwsample.storage:SubStorage.put_player", where="F:3"),
    )
    assert problems == []
    patches = _patching.patch(found)
    assert patches.aliases == ["cwsample.views.get_user"]
    s = st.Storage()
    with callwatch.request("r"):
        assert views.show(3) == {"id": 3, "full": False}  # bound by "from x import f" earlier
        assert s.get_table(1) == 1
        assert st.Storage.get_static(2) == 4 and s.get_static(2) == 4
        assert st.Storage.get_cls(3) == "Storage:3" and st.SubStorage.get_cls(3) == "SubStorage:3"
        assert s.get_players(1, 3) == [0, 1, 2]
        st.SubStorage().put_player(1)
        st.Storage().put_player(1)  # only SubStorage's was patched
    snap = _core.collector.swap(0)
    got = {snap.entries[k].name: fs.calls for k, fs in snap.handlers["r"].funcs.items()}
    assert got == {"get_user": 1, "Storage_get_table": 1, "Storage_get_static": 2, "Storage_get_cls": 2,
                   "Storage_get_players": 1, "Storage_get_player": 3, "SubStorage_put_player": 1, "db": 10}
    patches.undo()
    assert st.get_user is originals["get_user"] and views.get_user is originals["views.get_user"]
    for name in ("get_table", "get_static", "get_cls"):
        assert st.Storage.__dict__[name] is originals[name]
    assert "put_player" not in st.SubStorage.__dict__
    assert not hasattr(st.get_user, _core.MARK)


def test_patching_again_wraps_the_original_once_and_each_undo_restores_only_its_own() -> None:
    original = st.fact
    p1 = _patching.patch(resolve("cwsample.storage:fact")[0])
    first = st.fact
    found2, _ = resolve("cwsample.storage:fact")
    assert found2[0].func is original  # seen through callwatch's own wrapper
    p2 = _patching.patch(found2)
    second = st.fact
    assert second is not first and second.__wrapped__ is original
    p1.undo()  # the newer wrapper stays
    assert st.fact is second
    with callwatch.request("r"):
        assert st.fact(3) == 6
    snap = _core.collector.swap(0)
    assert {snap.entries[k].name: fs.calls for k, fs in snap.handlers["r"].funcs.items()} == {"fact": 3}
    p2.undo()
    assert st.fact is original


def test_a_function_watched_in_the_code_is_not_wrapped_again() -> None:
    import cwsample.decorated as dec

    found, problems = resolve("cwsample.decorated:already")
    assert problems == []
    patches = _patching.patch(found)
    assert patches.done == [] and getattr(dec.already, _core.MARK) is not None
    patches.undo()


def test_a_target_that_cannot_be_set_is_a_located_config_error_and_nothing_stays_patched() -> None:
    original = st.get_user
    found, problems = resolve(WatchTarget("cwsample.storage:get_user", where="F:1"),
                              WatchTarget("cwsample.storage:Frozen.get", where="F:2"))
    assert problems == []
    with pytest.raises(callwatch.ConfigError) as ei:
        _patching.patch(found)
    assert str(ei.value) == ("F:2: target: cannot patch 'cwsample.storage:Frozen.get': AttributeError: Frozen is "
                             "frozen. Fix: watch a Python function that calls it instead")
    assert st.get_user is original


def test_count_mode_counts_per_request_without_replacing_the_function() -> None:
    import sys

    from callwatch import _monitor

    original = st.get_user
    found, problems = resolve(WatchTarget("cwsample.storage:get_user", group="db", where="F:1", mode="count"))
    assert problems == []
    patches = _patching.patch(found)
    replaced = st.get_user is not original
    with callwatch.request("r"):
        views.show(1)  # through a copy bound by "from x import f": counted too
        st.get_user(2)
    st.get_user(3)  # outside any request: background
    snap = _core.collector.swap(0)
    patches.undo()
    got = {snap.entries[k].name: (fs.calls, fs.ns) for k, fs in snap.handlers["r"].funcs.items()}
    if sys.version_info >= (3, 12):
        assert not replaced and _monitor.AVAILABLE
        assert got == {"get_user": (2, 0), "db": (2, 0)}  # counts only: no time
    else:  # falls back to the wrapper
        assert replaced and got["get_user"][0] == 2
    bg = {snap.entries[k].name: fs.calls for k, fs in snap.handlers["_background"].funcs.items()}
    assert bg["get_user"] == 1
    with callwatch.request("after"):
        st.get_user(4)
    after = _core.collector.swap(0).handlers["after"]
    assert sum(fs.calls for fs in after.funcs.values()) == 0  # undone: no longer counted


def test_only_imports_of_the_function_are_patched_not_a_variable_that_holds_it() -> None:
    import cwsample.holder as holder

    original, original_many = st.get_user, st.get_users
    found, problems = resolve("cwsample.storage:get_user", "cwsample.storage:get_users")
    assert problems == []
    patches = _patching.patch(found)
    try:
        assert sorted(patches.aliases) == ["cwsample.holder.fetch_all", "cwsample.holder.get_user",
                                           "cwsample.views.get_user"]
        assert holder.get_user is st.get_user is not original  # from ... import get_user
        assert holder.fetch_all is st.get_users is not original_many  # from ... import get_users as fetch_all
        assert holder.ORIGINAL_GET_USER is original  # the user's own variable: left alone
    finally:
        patches.undo()
    assert (holder.get_user, holder.fetch_all, holder.ORIGINAL_GET_USER) == (original, original_many, original)
