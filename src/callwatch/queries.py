"""Graphite targets for callwatch's metrics, for the naming a config produces.

Shared by ``callwatch alerts check`` and the generated Grafana dashboards and alert rules,
so both read exactly the series the exporter writes.  Totals are summed over every origin
(host and worker slot) with ``groupByNode(s)`` (hierarchical names) or ``groupByTags``
(tagged series).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import Config

__all__ = ["Queries"]


@dataclass(frozen=True)
class Queries:
    prefix: str
    origin: bool  # names have a <host>_w<N> part
    tags: bool

    @classmethod
    def from_config(cls, cfg: Config) -> Queries:
        return cls(cfg.graphite.prefix, bool(cfg.host) or cfg.worker != "none", cfg.graphite.tags)

    # -- hierarchical layout ----------------------------------------------------------

    @property
    def base_pattern(self) -> str:
        return ".".join(p for p in (self.prefix, "*" if self.origin else "") if p)

    @property
    def handler_node(self) -> int:
        return (len(self.prefix.split(".")) if self.prefix else 0) + (1 if self.origin else 0) + 1

    def handler_path(self, handler: str = "*", origin: str = "*") -> str:
        """``<prefix>.<origin>.handler.<handler>`` (wildcards by default)."""
        return ".".join(p for p in (self.prefix, origin if self.origin else "", "handler", handler) if p)

    def _tagged(self, name: str) -> str:
        return f"seriesByTag('name={'.'.join(p for p in (self.prefix, name) if p)}')"

    # -- the targets ----------------------------------------------------------------

    def requests_by_handler(self) -> str:
        if self.tags:
            return f"groupByTags({self._tagged('requests')}, 'sum', 'handler')"
        return f"groupByNode({self.handler_path()}.requests, {self.handler_node}, 'sum')"

    def errors_by_handler(self) -> str:
        if self.tags:
            return f"groupByTags({self._tagged('errors')}, 'sum', 'handler')"
        return f"groupByNode({self.handler_path()}.errors, {self.handler_node}, 'sum')"

    def calls_by_handler_function(self) -> str:
        if self.tags:
            return f"groupByTags({self._tagged('watch.calls')}, 'sum', 'handler', 'function')"
        h = self.handler_node
        return f"groupByNodes({self.handler_path()}.watch.*.calls, 'sum', {h}, {h + 2})"

    def p99_by_handler(self) -> str:
        if self.tags:
            return f"groupByTags({self._tagged('response_ms.p99')}, 'max', 'handler')"
        return f"groupByNode({self.handler_path()}.response_ms.p99, {self.handler_node}, 'max')"

    # -- reading the series names back ----------------------------------------------

    def handler_of(self, series: str) -> str:
        if self.tags:
            return _tag(series, "handler")
        return series

    def pair_of(self, series: str) -> tuple[str, str]:
        if self.tags:
            return _tag(series, "handler"), _tag(series, "function")
        handler, _, function = series.partition(".")
        return handler, function


def _tag(series: str, tag: str) -> str:
    m = re.search(rf";{tag}=([^;]*)", series)
    return m.group(1) if m else series
