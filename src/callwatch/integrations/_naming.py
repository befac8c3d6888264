"""Default handler names for requests: never a raw path with ids in it."""

from __future__ import annotations

import re
from typing import Callable, Optional, TypeVar

T = TypeVar("T")

_ID = re.compile(r"^(\d+|[0-9a-fA-F]{8,}|[0-9a-fA-F-]{32,36})$")
_PARAM = re.compile(r"^[{<]([^}>]*)[}>]$")

#: Requests that no route matched (404s): one name, however many paths are tried.
UNMATCHED = "_unmatched"


def route_name(method: str, template: str) -> str:
    """``GET`` + ``/users/{id:int}`` (or Flask's ``/users/<int:id>``) -> ``GET_users_id``."""
    parts = [method.upper()]
    for seg in template.strip("/").split("/"):
        if not seg:
            continue
        m = _PARAM.match(seg)
        if m:
            inner = m.group(1)
            # Starlette puts the converter after the name, Flask/Werkzeug before it
            seg = inner.split(":")[0] if template.find("{") >= 0 else inner.split(":")[-1]
        parts.append(seg)
    if len(parts) == 1:
        parts.append("root")
    return "_".join(parts)


def path_prefix_name(method: str, path: str) -> str:
    """The fallback when no route is known: method and the first path segment, with
    anything that looks like an id replaced by ``id`` (``GET /users/42`` -> ``GET_users``)."""
    first = path.strip("/").split("/", 1)[0]
    if not first:
        first = "root"
    elif _ID.match(first):
        first = "id"
    return f"{method.upper()}_{first[:40]}"


def user_name(namer: Optional[Callable[[T], str]], request: T) -> Optional[str]:
    """What a middleware's ``name=`` function says for ``request``; None when there is
    none, or it raised (a user's naming function must not break the request)."""
    if namer is None:
        return None
    try:
        return namer(request)
    except Exception:
        return None
