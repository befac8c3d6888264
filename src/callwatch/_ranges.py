"""The time ranges ``callwatch explain`` reads: ``START..END`` (see :func:`parse_range`)."""

from __future__ import annotations

import datetime as dt
import re

_REL = {"s": 1, "min": 60, "h": 3600, "d": 86400}


def _moment(text: str, now: float) -> int:
    """``now``, ``-30min``/``-2h`` (ago), unix seconds, ``HH:MM[:SS]`` (today, UTC) or
    ``YYYY-MM-DDTHH:MM[:SS]`` (UTC); ValueError otherwise."""
    t = text.strip()
    if t == "now":
        return int(now)
    if m := re.fullmatch(r"-(\d+)(s|min|h|d)", t):
        return int(now) - int(m.group(1)) * _REL[m.group(2)]
    if re.fullmatch(r"\d{9,11}", t):
        return int(t)
    utc = dt.timezone.utc
    if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", t):
        h, mi, *sec = (int(x) for x in t.split(":"))
        day = dt.datetime.fromtimestamp(now, utc).replace(hour=h, minute=mi, second=sec[0] if sec else 0,
                                                          microsecond=0)
        return int(day.timestamp())
    when = dt.datetime.fromisoformat(t)
    return int((when if when.tzinfo else when.replace(tzinfo=utc)).timestamp())


def parse_range(text: str, now: float) -> tuple[int, int]:
    """``START..END`` as unix seconds [start, end); ValueError with the reason."""
    if text.count("..") != 1:
        raise ValueError(f"{text!r} is not START..END")
    a, b = text.split("..")
    try:
        start, end = _moment(a, now), _moment(b, now)
    except ValueError:
        raise ValueError(f"{text!r}: each end is HH:MM[:SS] (today, UTC), YYYY-MM-DDTHH:MM, unix seconds, "
                         "-30min/-2h (ago) or now") from None
    if end <= start:
        raise ValueError(f"{text!r} ends before it starts")
    if start > now:
        raise ValueError(f"{text!r} starts in the future")
    return start, end
