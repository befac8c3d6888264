"""Every exception callwatch raises where a user can see it, in one place.

None of them ever reaches the application from the request path: the hot path counts its
own failures (``callwatch.internal_errors``) instead.  They come from ``configure(...,
strict=True)``, ``callwatch check-config`` and the analysis commands, each with one line
per problem that names the file, line or key and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AnalysisError", "CallgraphError", "CallwatchError", "ConfigError", "GraphiteError", "Problem",
           "SlotError"]


class CallwatchError(Exception):
    """The base of every callwatch exception."""


@dataclass(frozen=True)
class Problem:
    """One mistake: where (``file:line``), which key, what is wrong, and how to fix it."""

    where: str
    key: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        key = f" {self.key}:" if self.key else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return f"{self.where}:{key} {self.message}.{fix}"


class ConfigError(CallwatchError, ValueError):
    """A configuration that cannot be used; ``str()`` has one line per problem.

    >>> callwatch.configure("callwatch.yaml", strict=True)   # raises it for a bad file
    """

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class SlotError(CallwatchError):
    """A worker slot could not be taken (callwatch then falls back to a unique name)."""


class AnalysisError(CallwatchError):
    """A profile dump that cannot be used, with the reason and the fix, in one line."""


class CallgraphError(CallwatchError):
    """Why no call graph could be drawn, in one line with the fix."""


class GraphiteError(CallwatchError):
    """graphite-web could not answer ``callwatch alerts check`` usably (reported UNKNOWN)."""
