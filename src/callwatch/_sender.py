"""Sending lines to carbon: graphyte's line format, with delivery callwatch can trust.

The send buffer (``_buffer``) talks to any :class:`Sender`: ``build_message`` makes one
line, ``send_message`` delivers a batch of lines or raises.
"""

from __future__ import annotations

import socket
from typing import Mapping, Protocol

import graphyte

__all__ = ["GraphyteSender", "Sender", "TCP_BATCH_BYTES", "UDP_DATAGRAM_BYTES", "split_lines"]

#: Largest payload per TCP connection (one connection per flush, unless carbon was down
#: and a large backlog is being resent), and per UDP datagram.
TCP_BATCH_BYTES = 1024 * 1024
UDP_DATAGRAM_BYTES = 1400


class Sender(Protocol):
    """What the exporter needs from a sender (``GraphyteSender``, ``testing.RecordingSender``)."""

    def build_message(self, metric: str, value: float, timestamp: int,
                      tags: Mapping[str, str] = ...) -> bytes:
        """One plaintext line, ``metric value timestamp\\n``; ValueError/TypeError if it cannot be."""

    def send_message(self, message: bytes) -> None:
        """Deliver ``message`` (whole lines) or raise; a raise keeps the lines for a retry."""


class GraphyteSender(graphyte.Sender):  # type: ignore[misc]
    """graphyte's line format, with delivery that callwatch can trust.

    ``send_message`` raises on any failure, so the caller keeps the batch.  Over TCP it
    sends the whole batch (``sendall``), half-closes, and waits until carbon closes its
    side: carbon only does that after reading everything we sent, so a batch counts as
    sent only when carbon has actually read it (a peer that accepts but never reads, or
    dies mid-batch, is a failure, not a silent loss).  UDP is sent in datagrams of whole
    lines.
    """

    def __init__(self, host: str, port: int = 2003, *, protocol: str = "tcp", timeout: float = 2.0) -> None:
        super().__init__(host, port=port, prefix=None, timeout=timeout, interval=None,
                         protocol=protocol, raise_send_errors=True)

    def __del__(self) -> None:  # graphyte's __del__ stops a thread we never start
        pass

    def send_message(self, message: bytes) -> None:
        """Deliver ``message`` (whole lines) to carbon, or raise (see the class docstring)."""
        if self.protocol == "udp":
            self._send_udp(message)
        else:
            self._send_tcp(message)

    def _send_tcp(self, message: bytes) -> None:
        with socket.create_connection((self.host, self.port), self.timeout) as sock:
            sock.settimeout(self.timeout)
            sock.sendall(message)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass

    def _send_udp(self, message: bytes) -> None:
        family, kind, proto, _, addr = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as sock:
            for chunk in split_lines(message, UDP_DATAGRAM_BYTES):
                sock.sendto(chunk, addr)


def split_lines(payload: bytes, limit: int) -> list[bytes]:
    """Cut ``payload`` into chunks of at most ``limit`` bytes, only between lines."""
    out: list[bytes] = []
    start = 0
    n = len(payload)
    while start < n:
        end = start + limit
        if end >= n:
            out.append(payload[start:])
            break
        cut = payload.rfind(b"\n", start, end)
        if cut < start:  # one line longer than the limit: send it alone
            cut = payload.find(b"\n", end)
            if cut < 0:
                cut = n - 1
        out.append(payload[start:cut + 1])
        start = cut + 1
    return out
