"""callwatch.explain: the math, on per-request means the tests write down (exact values,
worked by hand in the comments)."""

from __future__ import annotations

import pytest

from callwatch.explain import UNSET, Part, Period, Slice, explain, parse_range, rank_handlers, render, short_text


def rows(e: object) -> list[tuple[str, str, float]]:
    return [(r.kind, r.name, round(r.contribution_ms, 9)) for r in e.rows]  # type: ignore[attr-defined]


def test_a_function_called_more() -> None:
    b = Period(100, 10.0, functions={"get_user": Part(2.0, 2.0), "render": Part(3.0, 1.0)})
    a = Period(100, 15.5, functions={"get_user": Part(7.0, 7.0), "render": Part(3.0, 1.0)})
    e = explain("login", b, a)
    # 15.5 - 10 = 5.5: get_user +5, render 0, the rest 0.5 (outside watched calls)
    assert rows(e) == [("function", "get_user", 5.0), ("function", "render", 0.0),
                       ("unexplained", "unexplained", 0.5)]
    assert e.rows[0].percent == pytest.approx(100 * 5 / 5.5)
    assert (e.rows[0].calls_before, e.rows[0].calls_after) == (2.0, 7.0)
    assert short_text(e) == ("login mean +55 % (10.0 -> 15.5 ms): get_user 2.00 -> 7.00 calls/req (+5.0 ms/req)")


def test_a_function_slower_per_call() -> None:
    b = Period(50, 10.0, functions={"query": Part(3.0, 3.0), "cache": Part(1.0, 4.0)})
    a = Period(60, 16.0, functions={"query": Part(9.0, 3.0), "cache": Part(1.0, 4.0)})
    e = explain("deal", b, a)
    assert rows(e)[0] == ("function", "query", 6.0)
    assert e.rows[0].percent == 100.0 and e.unexplained.contribution_ms == 0.0
    assert (e.rows[0].calls_before, e.rows[0].calls_after) == (3.0, 3.0)


def test_groups_are_summed_not_their_nested_members() -> None:
    # get_players calls get_player: their times nest, so only the group db is summed
    members = {"get_players": "db", "get_player": "db"}
    b = Period(10, 5.0, functions={"get_players": Part(3.0, 1), "get_player": Part(2.0, 2)},
               groups={"db": Part(3.0, 3)}, members=members)
    a = Period(10, 10.0, functions={"get_players": Part(8.0, 1), "get_player": Part(7.0, 7)},
               groups={"db": Part(8.0, 8)}, members=members)
    e = explain("deal", b, a)
    assert rows(e) == [("group", "db", 5.0), ("unexplained", "unexplained", 0.0)]
    # the member that changed most, get_players and get_player tie at +5: the first by name
    assert e.rows[0].detail == "most: get_player 2.00 -> 7.00 calls/req, +5.00 ms/req"


def test_a_mix_shift_is_separated_from_growth_within_values() -> None:
    # players=2 requests take 10 ms (get_player 2 ms), players=7 ones 20 ms (7 ms): the
    # share of 7 goes 10 % -> 60 %, nothing changes within a value.
    f2, f7 = {"function:get_player": Part(2.0, 2)}, {"function:get_player": Part(7.0, 7)}
    b = Period(100, 11.0, functions={"get_player": Part(2.5, 2.5)},
               values={("players", "2"): Slice(90, 10.0, f2), ("players", "7"): Slice(10, 20.0, f7)})
    a = Period(100, 16.0, functions={"get_player": Part(5.0, 5.0)},
               values={("players", "2"): Slice(40, 10.0, f2), ("players", "7"): Slice(60, 20.0, f7)})
    e = explain("deal", b, a)
    # mix: Δs (-0.5, +0.5) x t̄ (10, 20) = +5 = all of the change; get_player's within-value change 0
    assert rows(e) == [("mix", "players=7", 5.0), ("function", "get_player", 0.0),
                       ("unexplained", "unexplained", 0.0)]
    assert e.rows[0].detail == "players=7 share 10 % -> 60 %, players=2 share 90 % -> 40 %"
    assert e.rows[0].percent == 100.0


def test_mix_and_within_growth_add_up() -> None:
    # as above, but players=7 requests also got 4 ms slower, all of it in get_player
    f2, f7, f7b = ({"function:get_player": Part(2.0, 2)}, {"function:get_player": Part(7.0, 7)},
                   {"function:get_player": Part(11.0, 7)})
    b = Period(100, 11.0, functions={"get_player": Part(2.5, 2.5)},
               values={("players", "2"): Slice(90, 10.0, f2), ("players", "7"): Slice(10, 20.0, f7)})
    a = Period(100, 18.4, functions={"get_player": Part(7.4, 5.0)},
               values={("players", "2"): Slice(40, 10.0, f2), ("players", "7"): Slice(60, 24.0, f7b)})
    e = explain("deal", b, a)
    # Δ 7.4 = mix Σ Δs t̄ = -0.5 x 10 + 0.5 x 22 = 6  +  within Σ s̄ Δt = 0.35 x 4 = 1.4
    assert rows(e) == [("mix", "players=7", 6.0), ("function", "get_player", 1.4),
                       ("unexplained", "unexplained", 0.0)]


def test_requests_without_a_value_are_derived_from_the_totals() -> None:
    # only players=7 is split out; the other requests are UNSET: 90 x t + 10 x 20 = 100 x 11
    b = Period(100, 11.0, values={("players", "7"): Slice(10, 20.0)})
    a = Period(100, 16.0, values={("players", "7"): Slice(60, 20.0)})
    e = explain("deal", b, a)
    assert rows(e) == [("mix", "players=7", 5.0), ("unexplained", "unexplained", 0.0)]
    assert e.rows[0].detail == f"players=7 share 10 % -> 60 %, players={UNSET} share 90 % -> 40 %"


def test_no_change() -> None:
    b = Period(100, 10.0, 20.0, functions={"get_user": Part(2.0, 2.0)})
    e = explain("login", b, b)
    assert rows(e) == [("function", "get_user", 0.0), ("unexplained", "unexplained", 0.0)]
    assert all(r.percent is None for r in e.rows)
    assert short_text(e) == "login mean +0 % (10.0 -> 10.0 ms), p99 +0 % (20.0 -> 20.0 ms): " \
                            "no watched part explains it"


def test_profiled_functions_are_listed_apart_and_not_summed() -> None:
    b = Period(10, 10.0, profile={"db.py:3(get)": Part(4.0, 2), "app.py:1(view)": Part(9.0, 1)})
    a = Period(10, 14.0, profile={"db.py:3(get)": Part(8.0, 4), "app.py:1(view)": Part(13.0, 1)})
    e = explain("login", b, a)
    assert [(r.name, r.contribution_ms) for r in e.profiled] == [("app.py:1(view)", 4.0), ("db.py:3(get)", 4.0)]
    assert e.unexplained.contribution_ms == 4.0  # nothing watched: all of it, the profile notwithstanding
    assert "not summed" in render(e)


def test_rank_handlers_largest_change_first() -> None:
    same = Period(10, 5.0)
    ranked = rank_handlers({"a": (same, same), "b": (same, Period(10, 9.0)), "c": (same, Period(10, 2.0))})
    assert [(e.handler, e.delta_ms) for e in ranked] == [("b", 4.0), ("c", -3.0), ("a", 0.0)]


NOW = 1_765_000_000  # 2025-12-06T05:46:40Z


def test_parse_range() -> None:
    assert parse_range("1764990000..1764993600", NOW) == (1764990000, 1764993600)
    assert parse_range("-2h..-1h", NOW) == (NOW - 7200, NOW - 3600)
    assert parse_range("-30min..now", NOW) == (NOW - 1800, NOW)
    assert parse_range("01:00..02:30:15", NOW) == (1764982800, 1764988215)  # 2025-12-06, UTC
    assert parse_range("2025-12-06T01:00..2025-12-06T02:00", NOW) == (1764982800, 1764986400)


@pytest.mark.parametrize("bad, why", [("13:00", "is not START..END"), ("14:00..13:00", "ends before"),
                                      ("x..13:00", "each end is"), ("-1h..+2h", "each end is"),
                                      ("1865000000..1865000100", "in the future")])
def test_parse_range_says_why(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_range(bad, NOW)
