"""The Graphite targets that ``callwatch alerts check`` and the generated Grafana alert
rules read, built on :class:`callwatch.naming.Pattern` (the exporter's own layout), so
both read exactly the series the exporter writes, hierarchical or tagged.

Spike targets keep every origin (host and worker slot) apart, as the spike definition in
:mod:`callwatch.spikes` says; the others sum or take the worst over origins.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Config
from .naming import Pattern

__all__ = ["Queries", "fields"]


@dataclass(frozen=True)
class Queries:
    """The targets of the alert rules, from the names the exporter writes (``pattern``)."""

    pattern: Pattern

    @classmethod
    def from_config(cls, cfg: Config) -> Queries:
        """The targets of a configuration's metric names."""
        return cls(Pattern.from_config(cfg))

    def requests_by_origin_handler(self) -> str:
        """Series named ``<origin>.<handler>``: requests per interval."""
        p = self.pattern
        return p.alias(p.handler("requests"), "origin", "handler")

    def calls_per_request_by_origin_function(self) -> str:
        """Series named ``<origin>.<handler>.<function>``: the spike definition's values."""
        p = self.pattern
        return p.alias(p.watch("calls_per_request.mean"), "origin", "handler", "function")

    def p99_by_handler(self) -> str:
        """Series named ``<handler>``: the worst origin's p99 response time."""
        p = self.pattern
        return p.group(p.handler("response_ms.p99"), "max", "handler")

    def leak_suspects_by_origin(self) -> str:
        """Series named ``<origin>``: the types each process suspects of leaking, at each
        census (``callwatch.memory``)."""
        p = self.pattern
        return p.alias(p.process("memory.leak_suspects"), "origin")

    def requests_total(self) -> str:
        """One series: requests per interval, summed over every origin and handler."""
        return f"sumSeries({self.pattern.handler('requests')})"

    def spike_ratio(self, floor: float, baseline: str) -> str:
        """Per origin x handler x function: the interval's calls per request over the
        moving median of the ``baseline`` period before it, where at least ``floor``
        (Graphite's nearest to the spike definition; the differences are in spikes.py)."""
        cpr = self.pattern.watch("calls_per_request.mean")
        return f"divideSeriesLists(removeBelowValue({cpr}, {floor:g}), movingMedian({cpr}, '{baseline}'))"


def fields(series: str, n: int) -> tuple[str, ...]:
    """The ``n`` dot-joined fields of an aliased series name; the first (the origin, which
    may hold dots when tagged) takes what is left, and is "" when names have none."""
    parts = series.rsplit(".", n - 1)
    if len(parts) == n:  # tagged names join host and worker; a missing one leaves a dot
        parts[0] = parts[0].strip(".")
    return tuple([""] * (n - len(parts)) + parts)
