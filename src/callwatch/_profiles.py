"""The profile table: profiled requests summed per handler and function, and which of
those functions each interval reports (a stable, bounded top-N)."""

from __future__ import annotations

import fnmatch
from typing import Any

from ._stats import ProfileStats

#: Intervals a function stays reported after it left the top (so series do not flicker).
KEEP_FOR = 6


class StableTop:
    """A top-N that does not flicker: what enters the top stays reported for ``KEEP_FOR``
    rounds after it left it, at most 2 x N (the profile's functions per handler, the
    census's types)."""

    def __init__(self) -> None:
        self._chosen: dict[str, int] = {}

    def pick(self, ranked: list[str], top: int, round_: int) -> list[str]:
        """``ranked``: this round's names, best first."""
        chosen = self._chosen
        for label in ranked[:top]:
            chosen[label] = round_
        for label, when in list(chosen.items()):
            if round_ - when > KEEP_FOR:
                del chosen[label]
        return [lb for lb in ranked if lb in chosen][: 2 * top]


class ProfileTable:
    """Filled by ``add`` (under the collector's lock), emptied by ``take`` at each swap."""

    def __init__(self) -> None:
        self.profiles: dict[str, ProfileStats] = {}
        #: profiled functions reported per handler (profile.top)
        self.top = 10
        #: patterns of ``mode: sampled`` watch entries: matching functions are always reported
        self.patterns: tuple[str, ...] = ()
        self._chosen: dict[str, StableTop] = {}
        self._round = 0

    def add(self, handler: str, ns: int, rows: Any, max_handlers: int) -> None:
        """One profiled request: rows of (label, calls, own_ns, cum_ns)."""
        ps = self.profiles.get(handler)
        if ps is None:
            if len(self.profiles) >= max_handlers:
                return
            ps = self.profiles[handler] = ProfileStats()
        ps.requests += 1
        ps.ns += ns
        funcs = ps.funcs
        for label, calls, own, cum in rows:
            f = funcs.get(label)
            if f is None:
                funcs[label] = [calls, own, cum]
            else:
                f[0] += calls
                f[1] += own
                f[2] += cum

    def take(self) -> dict[str, ProfileStats]:
        profiles, self.profiles = self.profiles, {}
        return profiles

    def select_top(self, profiles: dict[str, ProfileStats]) -> dict[str, list[str]]:
        """Per handler, the top functions by cumulative time, plus those chosen in the last
        few intervals that are still there, at most 2 x top; then the sampled patterns."""
        top = self.top
        self._round += 1
        out: dict[str, list[str]] = {}
        for handler, ps in profiles.items():
            stable = self._chosen.get(handler)
            if stable is None:
                stable = self._chosen[handler] = StableTop()
            ranked = sorted(ps.funcs, key=lambda lb: -ps.funcs[lb][2])
            picked = stable.pick(ranked, top, self._round)
            if self.patterns:
                shown = set(picked)
                picked += [lb for lb in ranked if lb not in shown
                           and any(fnmatch.fnmatchcase(lb, pat) for pat in self.patterns)][:top]
            out[handler] = picked
        return out

    def reset(self) -> None:
        self.profiles = {}
        self._chosen.clear()
