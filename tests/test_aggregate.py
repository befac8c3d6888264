"""The collector alone: per-request states in, per-interval snapshots out."""

from __future__ import annotations

import pytest

from callwatch._state import DIMS, NAME, new_state, record
from callwatch.aggregate import BACKGROUND, OVERFLOW, Collector, FuncStats, Registry


def make() -> tuple[Registry, Collector, int, int, int]:
    reg = Registry()
    a = reg.function("a", "db").index
    b = reg.function("b", "db").index
    g = reg.group("db").index
    return reg, Collector(reg, max_handlers=2), a, b, g


def state(reg: Registry, **slots: tuple[int, int]) -> State:
    """A finished request's state: entry index (the digits of the keyword) -> (calls, ns)."""
    st = new_state()
    for k, (calls, ns) in slots.items():
        st[int(k[1:])] = [calls, ns, 0]
    return st


def test_registry_layout_puts_the_group_first_and_reuses_entries() -> None:
    reg = Registry()
    f = reg.function("f", "db")
    assert [(e.name, e.is_group) for e in reg.entries] == [("__request__", False), ("db", True), ("f", False)]
    assert f.group_index == 1 and reg.group_of == [-3, -2, 1]
    assert reg.function("f", "db") is f and len(reg.entries) == 3


def test_a_state_holds_only_what_the_request_touched() -> None:
    st = new_state()
    assert st == {DIMS: 0, NAME: 0}  # the header only
    record(st, 5)[0] += 1
    assert st == {DIMS: 0, NAME: 0, 5: [1, 0, 0]}


def test_record_sums_entries_and_keeps_per_request_maxima() -> None:
    reg, col, a, b, g = make()
    # the wrappers count a group's calls (its members') and time in the group's record
    col.record("h", 5_000, 0, state(reg, **{f"k{a}": (2, 100), f"k{b}": (1, 50), f"k{g}": (3, 120)}))
    col.record("h", 7_000, 1, state(reg, **{f"k{a}": (1, 10), f"k{g}": (1, 10)}))
    snap = col.swap(10.0)
    hs = snap.handlers["h"]
    assert (hs.requests, hs.errors, hs.ns, hs.ns_max, hs.sketch.count) == (2, 1, 12_000, 7_000, 2)
    assert hs.funcs == {a: FuncStats(3, 2, 110, 100), b: FuncStats(1, 1, 50, 50), g: FuncStats(4, 3, 130, 120)}


def test_background_records_have_no_response_time() -> None:
    reg, col, a, _, _ = make()
    col.record(BACKGROUND, -1, 0, state(reg, **{f"k{a}": (1, 5)}))
    hs = col.swap(0).handlers[BACKGROUND]
    assert (hs.requests, hs.sketch.count, hs.funcs[a].calls) == (0, 0, 1)


def test_handler_cap_sends_new_names_to_overflow_while_the_places_are_in_use() -> None:
    reg, col, *_ = make()
    for name in ["h1", "h2", "h3", "h4", "h1", BACKGROUND]:
        col.record(name, 1, 0, state(reg))
    assert {n: hs.requests for n, hs in col.swap(0).handlers.items()} == {
        "h1": 2, "h2": 1, OVERFLOW: 2, BACKGROUND: 1}
    for name in ["h3", "h1", "h2"]:  # the next interval: h1 and h2 still in use
        col.record(name, 1, 0, state(reg))
    assert {n: hs.requests for n, hs in col.swap(0).handlers.items()} == {
        "h1": 1, "h2": 1, OVERFLOW: 1, BACKGROUND: 0}


def test_names_of_a_scan_age_out_and_a_real_endpoint_seen_later_gets_its_own_series() -> None:
    import random

    from callwatch._limits import IDLE_INTERVALS

    reg = Registry()
    col = Collector(reg, max_handlers=200)
    rng = random.Random(5)
    for _ in range(300):  # a scan of random first path segments fills every place
        col.record(f"GET_{rng.randrange(10**9)}", 1, 0, state(reg))
    col.record("GET_orders", 1, 0, state(reg))
    first = col.swap(0).handlers
    assert "GET_orders" not in first and first[OVERFLOW].requests == 101
    got = []
    for _ in range(IDLE_INTERVALS + 1):  # the scan's names go unused
        col.record("GET_orders", 1, 0, state(reg))
        got.append("GET_orders" in col.swap(0).handlers)
    assert got == [False] * (IDLE_INTERVALS - 1) + [True, True]
    last = col.swap(0).handlers  # zeros still reported for the kept name, none for evicted ones
    assert last["GET_orders"].requests == 0 and len(last) <= 200 + 2


def test_dimension_values_age_out_too() -> None:
    from callwatch._limits import IDLE_INTERVALS

    reg, col, *_ = make()
    col.max_dimension_values = 2
    for value in ("a", "b", "c"):
        st = state(reg)
        st[DIMS] = {"k": value}
        col.record("h", 1, 0, st)
    assert ("h", "k", "c") not in col.swap(0).handlers
    for _ in range(IDLE_INTERVALS):
        col.swap(0)
    st = state(reg)
    st[DIMS] = {"k": "c"}
    col.record("h", 1, 0, st)
    assert col.swap(0).handlers[("h", "k", "c")].requests == 1


def test_snapshot_reports_zeros_for_what_was_seen_before() -> None:
    reg, col, a, _, g = make()
    col.record("h", 1, 0, state(reg, **{f"k{a}": (1, 1), f"k{g}": (0, 1)}))
    col.swap(10)
    snap = col.swap(20)
    assert snap.handlers["h"].requests == 0
    assert snap.handlers["h"].funcs == {a: FuncStats(), g: FuncStats()}
    assert (snap.start, snap.end) == (10, 20)


def test_restore_merges_a_snapshot_back() -> None:
    reg, col, a, _, _ = make()
    col.set_start(100)
    col.record("h", 10, 0, state(reg, **{f"k{a}": (2, 4)}))
    snap = col.swap(100)
    col.record("h", 30, 0, state(reg, **{f"k{a}": (5, 1)}))
    col.restore(snap)
    merged = col.swap(110)
    hs = merged.handlers["h"]
    assert (merged.start, hs.requests, hs.ns, hs.ns_max, hs.sketch.count) == (100, 2, 40, 30, 2)
    assert hs.funcs[a] == FuncStats(7, 5, 5, 4)


def test_dimensions_split_a_handler_and_are_capped() -> None:
    reg, col, a, _, _ = make()
    col.max_dimension_values = 2
    for players in (2, 7, 7, 9, 10):
        st = state(reg, **{f"k{a}": (players, 1)})
        st[DIMS] = {"players": str(players)}
        col.record("deal", 1, 0, st)
    st = state(reg)
    st[NAME] = "renamed"  # callwatch.name_request() during the request
    col.record("deal", 1, 0, st)
    snap = col.swap(0)
    got = {k: (hs.requests, hs.funcs[a].calls if a in hs.funcs else 0) for k, hs in snap.handlers.items()}
    assert got == {"deal": (5, 35), ("deal", "players", "2"): (1, 2), ("deal", "players", "7"): (2, 14),
                   ("deal", "players", "_other"): (2, 19), "renamed": (1, 0)}


def test_a_broken_state_is_counted_not_raised() -> None:
    reg, col, *_ = make()
    col.record("h", 1, 0, None)  # type: ignore[arg-type]
    col.record("h", 5, 0, state(reg))
    snap = col.swap(0)  # requests are added in batches: at the latest when swapped
    assert col.internal_errors == 1
    assert snap.handlers["h"].requests == 1 and snap.handlers["h"].ns == 5


def test_requests_are_added_in_batches_and_none_is_lost_across_threads() -> None:
    import threading

    from callwatch.aggregate import FOLD_BATCH

    reg, col, a, _, _ = make()
    for _ in range(FOLD_BATCH - 1):
        col.record("h", 1, 0, state(reg, **{f"e{a}": (1, 1)}))
    assert len(col.pending) == FOLD_BATCH - 1  # not yet added: only appended
    col.record("h", 1, 0, state(reg, **{f"e{a}": (1, 1)}))
    assert col.pending == []  # the request that filled the batch added it

    def worker() -> None:
        for _ in range(5000):
            col.record("h", 1, 0, state(reg, **{f"e{a}": (2, 3)}))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for _ in range(200):
        col.fold()  # the flusher folding while the requests append
    for t in threads:
        t.join()
    hs = col.swap(0).handlers["h"]
    assert (hs.requests, hs.funcs[a].calls, hs.funcs[a].ns) == (FOLD_BATCH + 20000, FOLD_BATCH + 40000,
                                                                 FOLD_BATCH + 60000)
    assert col.pending == [] and col.internal_errors == 0


@pytest.mark.parametrize("keys", ["C", "Python"])
def test_adding_a_batch_to_a_sketch_gives_the_same_sketch_as_one_by_one(keys: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    from ddsketch import DDSketch

    from callwatch import _stats
    from callwatch.aggregate import SKETCH_ACCURACY, sketch_add_many

    if keys == "C" and _stats._c_sketch_keys is None:
        pytest.skip("the C extension is not in use (CALLWATCH_PURE_PYTHON=1, or not built)")
    if keys == "Python":
        monkeypatch.setattr(_stats, "_c_sketch_keys", None)
    rng = random.Random(3)
    # Bin edges, exact powers of two, and ints beyond a double's 53 bits.
    mapping = DDSketch(SKETCH_ACCURACY)._mapping
    edges = [int(mapping._pow_gamma(k)) + d for k in range(1, 2200) for d in (-1, 0, 1, 2)]
    values = [0, 1, 2, 999, 1000, 1001, 2 ** 40, 2 ** 53 + 1, 2 ** 64 + 3] + edges
    values += [int(rng.lognormvariate(13, 2)) for _ in range(5000)]
    rng.shuffle(values)
    one, many = DDSketch(SKETCH_ACCURACY), DDSketch(SKETCH_ACCURACY)
    for v in values:
        one.add(v)
    sketch_add_many(many, values[:2000])
    sketch_add_many(many, values[2000:])
    assert many._store.offset == one._store.offset and many._store.bins == one._store.bins
    assert (many._zero_count, many.count, many._min, many._max) == (one._zero_count, one.count, one._min, one._max)
    assert many.sum == pytest.approx(one.sum)
    for q in (0.5, 0.9, 0.99, 1.0):
        assert many.get_quantile_value(q) == one.get_quantile_value(q)


def test_quantiles_of_one_request_are_its_response_time_not_above_the_max() -> None:
    reg, col, *_ = make()
    col.record("h", 5_000_000, 0, state(reg))  # the sketch's bin for 5 ms answers ~5.03 ms
    hs = col.swap(0).handlers["h"]
    assert hs.ns_max == 5_000_000
    assert [hs.quantile_ns(q) for q in (0.5, 0.9, 0.99)] == [5_000_000.0] * 3


def test_a_running_background_state_is_reported_at_each_swap_by_what_it_gained() -> None:
    reg, col, a, _, g = make()
    st = state(reg)
    col.background_started(st)
    rec, grec = record(st, a), record(st, g)
    rec[0], rec[1], grec[0], grec[1] = 2, 20, 2, 20  # 2 nested calls so far
    first = col.swap(10).handlers[BACKGROUND]
    assert (first.funcs[a], first.funcs[g]) == (FuncStats(2, 2, 20, 20), FuncStats(2, 2, 20, 20))
    rec[0], rec[1], grec[0], grec[1] = 5, 50, 5, 50  # 3 more, then the loop returns
    col.background_done(st)
    second = col.swap(20).handlers[BACKGROUND]
    assert (second.funcs[a], second.funcs[g]) == (FuncStats(3, 3, 30, 30), FuncStats(3, 3, 30, 30))
    assert col.swap(30).handlers[BACKGROUND].funcs[a] == FuncStats()  # nothing twice


def test_batches_touching_few_or_many_entries_add_up_the_same() -> None:
    reg = Registry()
    col = Collector(reg)
    common = reg.function("common", None).index
    own = [reg.function(f"own{i}", None).index for i in range(10)]
    for i, k in enumerate(own):  # many distinct entries in one batch: the records are sorted
        col.record("many", 1, 0, state(reg, **{f"k{k}": (i + 1, 10 * (i + 1)), f"k{common}": (2, 5)}))
    for i in range(10):  # one entry in every request: looked up per state
        col.record("few", 1, 0, state(reg, **{f"k{common}": (i, 3)}))
    snap = col.swap(0)
    many, few = snap.handlers["many"].funcs, snap.handlers["few"].funcs
    assert many[common] == FuncStats(20, 2, 50, 5)
    assert [many[k] for k in own] == [FuncStats(i, i, 10 * i, 10 * i) for i in range(1, 11)]
    assert few == {common: FuncStats(45, 9, 30, 3)}


def test_states_not_made_by_new_state_are_counted_not_raised() -> None:
    reg, col, *_ = make()
    for broken in ({}, {1: [1, 0, 0]}, [0, 0, 0], "x"):
        col.record("h", 1, 0, broken)  # type: ignore[arg-type]
    col.record("h", 5, 0, state(reg))
    snap = col.swap(0)
    assert col.internal_errors == 4 and snap.handlers["h"].requests == 1
