"""The hot path: attribution, counting, timing and re-entry, with a fake duration clock."""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from typing import Callable

import pytest

import callwatch
from callwatch import _core
from callwatch.aggregate import BACKGROUND, Snapshot
from callwatch.testing import FakeClock

from conftest import WRAPPERS


@pytest.fixture(autouse=True, params=WRAPPERS)
def wrapper_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with the C watched wrapper and with the pure-Python one (in the
    pure-Python run of the suite, CALLWATCH_PURE_PYTHON=1, with that one only)."""
    if request.param == "C":
        assert _core._speedups is not None, (
            "callwatch._speedups was not built (needs gcc and the Python headers: "
            "pip install -e . again); CALLWATCH_PURE_PYTHON=1 is not set")
    monkeypatch.setattr(_core, "use_speedups", request.param == "C")
    return str(request.param)


def python_wrapper(w: object) -> object:
    """The generated Python wrapper: ``w`` itself, or the C wrapper's slow path."""
    return getattr(w, "_cw_slow", w)


def deepest_working(call: Callable[[int], object]) -> int:
    """The largest n for which ``call(n)`` runs without a RecursionError (a binary search)."""
    lo, hi = 0, sys.getrecursionlimit()
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            call(mid)
            lo = mid
        except RecursionError:
            hi = mid - 1
    return lo


def snap() -> Snapshot:
    return _core.collector.swap(0.0)


def calls(s: Snapshot, handler: str) -> dict[str, tuple[int, int, int, int]]:
    """{entry name: (calls, calls_max, ns, ns_max)}; groups as '[name]'."""
    hs = s.handlers[handler]
    out = {}
    for k, fs in hs.funcs.items():
        e = s.entries[k]
        out[f"[{e.name}]" if e.is_group else e.name] = (fs.calls, fs.calls_max, fs.ns, fs.ns_max)
    return out


def test_counts_and_times_per_request_exactly() -> None:
    clock = FakeClock()

    @callwatch.watch(group="db")
    def get_user(uid: int) -> int:
        clock.advance(0.002)
        return uid

    @callwatch.handler("login")
    def login(n: int) -> int:
        for i in range(n):
            get_user(i)
        clock.advance(0.001)
        return n

    with clock:
        assert login(3) == 3
        assert login(1) == 1
    s = snap()
    hs = s.handlers["login"]
    assert (hs.requests, hs.errors) == (2, 0)
    assert hs.ns == 7_000_000 + 3_000_000  # 3*2+1 ms and 1*2+1 ms
    assert hs.ns_max == 7_000_000
    assert calls(s, "login") == {
        "test_counts_and_times_per_request_exactly_get_user": (4, 3, 8_000_000, 6_000_000),
        "[db]": (4, 3, 8_000_000, 6_000_000),
    }


def test_recursion_counts_every_call_but_times_only_the_outermost() -> None:
    clock = FakeClock()

    @callwatch.watch(name="fact")
    def fact(n: int) -> int:
        clock.advance(0.001)
        return 1 if n <= 1 else n * fact(n - 1)

    with clock, callwatch.request("r"):
        assert fact(5) == 120
    assert calls(snap(), "r") == {"fact": (5, 5, 5_000_000, 5_000_000)}


def test_group_time_is_not_double_counted_when_members_nest() -> None:
    clock = FakeClock()

    @callwatch.watch(name="inner", group="db")
    def inner() -> None:
        clock.advance(0.003)

    @callwatch.watch(name="outer", group="db")
    def outer() -> None:
        clock.advance(0.001)
        inner()

    with clock, callwatch.request("r"):
        outer()
        inner()
    assert calls(snap(), "r") == {
        "outer": (1, 1, 4_000_000, 4_000_000),
        "inner": (2, 2, 6_000_000, 6_000_000),
        "[db]": (3, 3, 7_000_000, 7_000_000),  # outer's 4 ms (inner included) + the 2nd inner's 3 ms
    }


def test_exceptions_propagate_unchanged_and_count_as_errors() -> None:
    class Boom(Exception):
        pass

    @callwatch.watch(name="w")
    def w() -> None:
        raise Boom("from watched")

    @callwatch.handler("h")
    def h() -> None:
        w()

    for _ in range(2):
        with pytest.raises(Boom, match="from watched"):
            h()
    with pytest.raises(KeyError):
        with callwatch.request("r"):
            raise KeyError("x")
    s = snap()
    assert (s.handlers["h"].requests, s.handlers["h"].errors) == (2, 2)
    assert calls(s, "h")["w"][0] == 2
    assert (s.handlers["r"].requests, s.handlers["r"].errors) == (1, 1)


def test_calls_outside_any_handler_go_to_background() -> None:
    @callwatch.watch(name="bg", group="db")
    def bg(x: int) -> int:
        return x

    assert bg(1) == 1 and bg(2) == 2
    s = snap()
    assert calls(s, BACKGROUND)["bg"][:2] == (2, 1)
    assert calls(s, BACKGROUND)["[db]"][:2] == (2, 1)
    assert s.handlers[BACKGROUND].requests == 0
    assert _core._get() is None


def test_generated_wrapper_keeps_the_signature_and_defaults() -> None:
    sentinel: list[int] = []

    def f(a, b=2, /, c=3, *args, d, e=sentinel, **kw):  # type: ignore[no-untyped-def]
        return (a, b, c, args, d, e, kw)

    w = callwatch.watch(f)
    assert type(w).__name__ == ("Watched" if _core.use_speedups else "function")
    # the specialised wrapper, not the generic one
    assert python_wrapper(w).__code__.co_name == "_cw_watched"  # type: ignore[attr-defined]
    assert inspect.signature(w) == inspect.signature(f)
    assert w(1, d=4) == (1, 2, 3, (), 4, sentinel, {})
    assert w(1, 9, 8, 7, d=4, e=5, z=6) == (1, 9, 8, (7,), 4, 5, {"z": 6})
    assert w(1, 2, c=5, d=0)[2] == 5
    with pytest.raises(TypeError):
        w(1)  # d is required, as in f
    with pytest.raises(TypeError):
        w(a=1, d=2)  # a is positional-only, as in f
    assert w(1, d=4)[5] is sentinel  # the very same default object


def test_functions_without_a_python_signature_get_the_generic_wrapper() -> None:
    import math

    w = callwatch.watch(name="sqrt")(math.sqrt)
    generic = inspect.signature(python_wrapper(w), follow_wrapped=False)  # type: ignore[arg-type]
    assert str(generic) == "(*args, **kwargs)"
    with callwatch.request("r"):
        assert w(16.0) == 4.0
    assert calls(snap(), "r")["sqrt"][0] == 1


def test_async_handlers_and_concurrent_awaits_inside_one_request() -> None:
    clock = FakeClock()

    @callwatch.watch(name="aget", group="redis")
    async def aget(x: int) -> int:
        clock.advance(0.001)
        await asyncio.sleep(0)
        clock.advance(0.001)
        return x

    @callwatch.handler("ah")
    async def ah(n: int) -> list[int]:
        return list(await asyncio.gather(*(aget(i) for i in range(n))))

    async def main() -> None:
        assert await ah(3) == [0, 1, 2]
        async with callwatch.request("ar"):
            await aget(1)

    with clock:
        asyncio.run(main())
    s = snap()
    # gather runs the three up to their sleep (ms 0-1, 1-2, 2-3), then resumes them (ms 3-4,
    # 4-5, 5-6): they overlap, and the time counted is the union, 0 to 6 ms.
    assert s.handlers["ah"].ns == 6_000_000
    assert calls(s, "ah") == {"aget": (3, 3, 6_000_000, 6_000_000), "[redis]": (3, 3, 6_000_000, 6_000_000)}
    assert calls(s, "ar")["aget"] == (1, 1, 2_000_000, 2_000_000)


def test_interleaved_asyncio_requests_are_attributed_to_their_own_handler() -> None:
    @callwatch.watch(name="io")
    async def io() -> None:
        await asyncio.sleep(0.001)

    def make(name: str, n: int):  # type: ignore[no-untyped-def]
        @callwatch.handler(name)
        async def h() -> None:
            for _ in range(n):
                await io()
        return h

    handlers = [make(f"h{n}", n) for n in range(1, 5)]

    async def main() -> None:
        await asyncio.gather(*(h() for h in handlers for _ in range(10)))

    asyncio.run(main())
    s = snap()
    for n in range(1, 5):
        assert s.handlers[f"h{n}"].requests == 10
        assert calls(s, f"h{n}")["io"][:2] == (10 * n, n)


def test_threads_are_attributed_to_their_own_handler() -> None:
    barrier = threading.Barrier(4)

    @callwatch.watch(name="q")
    def q() -> None:
        pass

    def make(name: str, n: int):  # type: ignore[no-untyped-def]
        @callwatch.handler(name)
        def h() -> None:
            for _ in range(n):
                q()
        return h

    def worker(n: int) -> None:
        h = make(f"t{n}", n)
        barrier.wait()
        for _ in range(500):
            h()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = snap()
    for n in range(1, 5):
        assert s.handlers[f"t{n}"].requests == 500
        assert calls(s, f"t{n}")["q"][:2] == (500 * n, n)


def test_a_function_watched_during_a_request_still_counts() -> None:
    def late() -> int:
        return 7

    with callwatch.request("r"):
        w = callwatch.watch(name="late_registered")(late)  # state was allocated before this entry
        assert w() == 7
        assert w() == 7
    assert calls(snap(), "r")["late_registered"][0] == 2


def test_nested_handlers_attribute_to_the_innermost() -> None:
    @callwatch.watch(name="x")
    def x() -> None:
        pass

    @callwatch.handler("inner")
    def inner() -> None:
        x()

    @callwatch.handler("outer")
    def outer() -> None:
        x()
        inner()
        x()

    outer()
    s = snap()
    assert calls(s, "outer")["x"][0] == 2
    assert calls(s, "inner")["x"][0] == 1


def test_bare_and_named_handler_decorators() -> None:
    @callwatch.handler
    def bare() -> str:
        return "b"

    @callwatch.handler()
    def empty() -> str:
        return "e"

    assert bare() == "b" and empty() == "e"
    assert bare.__name__ == "bare" and bare.__wrapped__ is not None  # type: ignore[attr-defined]
    assert set(snap().handlers) == {"bare", "empty"}


def test_disabled_env_makes_decorators_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLWATCH_DISABLED", "1")

    def f() -> int:
        return 1

    assert callwatch.watch(f) is f
    assert callwatch.handler("h")(f) is f
    with callwatch.request("r"):
        pass
    assert snap().handlers == {}


def test_watched_methods_bind_like_functions_and_keep_their_attributes() -> None:
    class Store:
        """A store."""

        def __init__(self) -> None:
            self.n = 10

        @callwatch.watch(name="get")
        def get(self, k: int) -> int:
            """Get k."""
            return self.n + k

        @classmethod
        @callwatch.watch(name="make")
        def make(cls) -> Store:
            return cls()

        @staticmethod
        @callwatch.watch(name="pure")
        def pure(x: int) -> int:
            return x * 2

    s = Store()
    with callwatch.request("r"):
        assert s.get(1) == 11 and Store.get(s, 2) == 12 and s.get(k=3) == 13
        assert isinstance(Store.make(), Store) and s.pure(4) == 8
    assert {k: v[0] for k, v in calls(snap(), "r").items()} == {"get": 3, "make": 1, "pure": 1}
    g = Store.__dict__["get"]
    assert (g.__name__, g.__qualname__.split(".")[-1], g.__doc__, g.__module__) == ("get", "get", "Get k.", __name__)
    assert g.__wrapped__.__name__ == "get" and getattr(g, _core.MARK).name == "get"
    assert inspect.signature(g) == inspect.signature(g.__wrapped__)
    if _core.use_speedups:  # what the C wrapper lacks, it takes from the function
        assert g.__code__ is g.__wrapped__.__code__ and g.__globals__ is globals()
        with pytest.raises(AttributeError):
            g.no_such_attribute
    import weakref

    assert weakref.ref(g)() is g


def test_the_wrapper_keeps_no_reference_to_arguments_results_or_errors() -> None:

    class Boom(Exception):
        pass

    arg, kwarg, result = object(), object(), object()
    err = Boom()

    @callwatch.watch(name="f", group="g")
    def f(a: object, *, k: object) -> object:
        return result

    @callwatch.watch(name="bad")
    def bad(a: object) -> None:
        raise err

    before = [sys.getrefcount(x) for x in (arg, kwarg, result, err)]
    with callwatch.request("r"):
        for _ in range(1000):
            assert f(arg, k=kwarg) is result
            try:
                bad(arg)
            except Boom as e:
                assert e is err
            err.__traceback__ = None
    f(arg, k=kwarg)  # outside a request: the background path
    assert [sys.getrefcount(x) for x in (arg, kwarg, result, err)] == before
    assert {k: v[0] for k, v in calls(snap(), "r").items()} == {"f": 1000, "[g]": 1000, "bad": 1000}



def watched_module_level(x: int) -> int:
    return x + 1


def test_a_watched_function_pickles_and_copies_like_the_function() -> None:
    import copy
    import pickle

    w = callwatch.watch(name="pickled")(watched_module_level)
    saved = globals()["watched_module_level"]
    globals()["watched_module_level"] = w  # as configure() patches a module
    try:
        for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
            assert pickle.loads(pickle.dumps(w, proto)) is w
        assert copy.copy(w) is w and copy.deepcopy(w) is w
    finally:
        globals()["watched_module_level"] = saved


def test_a_running_background_loop_shows_its_nested_calls_at_each_flush() -> None:
    clock = FakeClock()

    @callwatch.watch(name="job")
    def job() -> None:
        clock.advance(0.001)

    flushed = []

    @callwatch.watch(name="worker_loop")
    def worker_loop() -> None:  # outside any handler, runs across flushes
        for _ in range(3):
            job()
        flushed.append(snap())  # what the flusher sends meanwhile
        for _ in range(2):
            job()

    with clock:
        worker_loop()
    # worker_loop's call counts when it starts, its time when it ends
    assert calls(flushed[0], BACKGROUND) == {"job": (3, 3, 3_000_000, 3_000_000), "worker_loop": (1, 1, 0, 0)}
    assert calls(snap(), BACKGROUND) == {"job": (2, 2, 2_000_000, 2_000_000),
                                         "worker_loop": (0, 0, 5_000_000, 5_000_000)}


def test_the_python_wrapper_costs_at_most_one_frame_of_depth_more_than_the_c_wrapper(
        monkeypatch: pytest.MonkeyPatch) -> None:

    def deepest(f: object) -> int:
        """How deep plain recursion can go and still call ``f``."""
        def down(n: int) -> int:
            return f() if n == 0 else down(n - 1)  # type: ignore[operator]

        return deepest_working(down)

    def leaf() -> int:
        return 1

    depths = {}
    for kind in WRAPPERS:
        monkeypatch.setattr(_core, "use_speedups", kind == "C")
        w = callwatch.watch(name="leaf")(leaf)
        outside = deepest(w)  # a background call
        with callwatch.request("r"):
            depths[kind] = (outside, deepest(w))
    snap()
    bare = deepest(leaf)
    py_out, py_in = depths["Python"]
    if "C" in depths:
        c_out, c_in = depths["C"]
        assert c_in == bare and c_out >= bare - 2  # the C wrapper is no frame; its slow path is one
        assert py_out >= c_out - 1
    assert py_in >= bare - 1 and py_out >= bare - 3


def test_a_recursive_watched_function_goes_as_deep_outside_a_request_as_inside(wrapper_kind: str) -> None:

    def deepest() -> int:
        return deepest_working(fact)

    @callwatch.watch(name="fact")
    def fact(n: int) -> int:
        return 1 if n <= 1 else n * fact(n - 1)

    outside = deepest()  # the outermost call makes the background state: no extra frame
    with callwatch.request("r"):
        inside = deepest()
    snap()
    # each level is one frame with the C wrapper, two with the Python one (its own frame);
    # the C wrapper's slow path (outside requests) is the Python wrapper: one frame more
    assert outside >= inside - (1 if wrapper_kind == "C" else 0)


def test_the_wrapper_keeps_what_lru_cache_and_inspect_see() -> None:
    import functools

    @functools.lru_cache(maxsize=8)
    def cached(x: int) -> int:
        return x * 2

    w = callwatch.watch(name="cached")(cached)
    with callwatch.request("r"):
        assert w(2) == 4 and w(2) == 4
    assert w.cache_info().hits == 1 and w.cache_info().currsize == 1  # type: ignore[attr-defined]
    w.cache_clear()  # type: ignore[attr-defined]
    assert cached.cache_info().currsize == 0
    assert calls(snap(), "r")["cached"][0] == 2

    def gen(n: int):  # type: ignore[no-untyped-def]
        yield from range(n)

    async def agen(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield i

    async def coro() -> int:
        return 5

    wg = callwatch.watch(name="gen")(gen)
    wa = callwatch.watch(name="agen")(agen)
    wc = callwatch.watch(name="coro")(coro)
    assert inspect.isgeneratorfunction(wg) and not inspect.isasyncgenfunction(wg)
    assert inspect.isasyncgenfunction(wa) and not inspect.isgeneratorfunction(wa)
    assert inspect.iscoroutinefunction(wc)

    async def use() -> list[int]:
        return [i async for i in wa(3)] + [await wc()]

    with callwatch.request("g"):
        assert list(wg(3)) == [0, 1, 2]
        assert asyncio.run(use()) == [0, 1, 2, 5]
    assert {k: v[0] for k, v in calls(snap(), "g").items()} == {"gen": 1, "agen": 1, "coro": 1}
