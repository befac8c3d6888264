"""Environment switches: one parser for every ``CALLWATCH_*`` on/off variable."""

from __future__ import annotations

import os
from typing import Mapping

TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off", "")


def switch(value: str) -> bool | None:
    """True, False, or None when ``value`` is not a switch (the caller reports it)."""
    v = value.strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    return None


def flag(name: str, env: Mapping[str, str] | None = None) -> bool:
    """Is environment variable ``name`` switched on?  Anything else counts as off."""
    return switch((os.environ if env is None else env).get(name, "")) is True
