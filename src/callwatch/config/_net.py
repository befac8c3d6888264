"""Host names and ``HOST[:PORT]`` strings, IPv6 included, and the short host name."""

from __future__ import annotations

import ipaddress
import re
import socket

_HOSTNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _ipv6(s: str) -> bool:
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


def normal_host(s: str) -> str | None:
    """A host name or IP address as a socket takes it (``[::1]`` -> ``::1``); None if not one."""
    if s.startswith("[") and s.endswith("]") and _ipv6(s[1:-1]):
        return s[1:-1]
    if ":" in s:
        return s if _ipv6(s) else None
    return s if _HOSTNAME.match(s) and len(s) <= 253 else None


def _ambiguous(s: str) -> bool:
    """``::1:2003`` is an IPv6 address, and also ``::1`` with a port: which was meant?"""
    head, _, tail = s.rpartition(":")
    return tail.isdigit() and 1 <= int(tail) <= 65535 and _ipv6(head)


def split_host_port(s: str, default_port: int) -> tuple[str | None, int | None, str]:
    """(host, port, "") or (None, None, why): ``host``, ``host:port``, ``[v6]``, ``[v6]:port``, bare v6."""
    s = s.strip()
    if s.startswith("["):
        inner, close, rest = s[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            return None, None, "a '[' without its ']'"
        host, port_s = "[" + inner + "]", rest[1:]
    elif s.count(":") > 1:
        if _ambiguous(s):
            return None, None, "ambiguous: an IPv6 address, or one with a port? Write [ADDRESS]:PORT"
        host, port_s = s, ""
    else:
        host, _, port_s = s.partition(":")
    h = normal_host(host)
    if h is None:
        return None, None, "not a host name or IP address"
    if not port_s:
        return h, default_port, ""
    if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        return None, None, "the port is not a number from 1 to 65535"
    return h, int(port_s), ""


def parse_host_port(s: str, default_port: int | None = None) -> tuple[str, int]:
    """``"host:port"`` -> (host, port); raises ValueError with a readable message."""
    if default_port is None:
        from ._model import GraphiteConfig

        default_port = GraphiteConfig().port
    host, port, _ = split_host_port(s, default_port)
    if host is None or port is None:
        raise ValueError(f"{s!r} is not HOST[:PORT], e.g. 127.0.0.1:2003 or [::1]:2003")
    return host, port


def short_hostname() -> str:
    """The host part of metric names for ``naming.host: auto``: the host name up to its
    first dot, sanitized like a metric name (``localhost`` if the system has none)."""
    from ..naming import sanitize  # naming reads Config: imported when called

    name = socket.gethostname().split(".")[0]
    return sanitize(name) if name else "localhost"
