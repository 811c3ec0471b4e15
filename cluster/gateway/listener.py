"""The gateway's listening sockets and server, without the MCP SDK.

The CLI binds the gateway's port before anything starts (a busy port fails in a
second), and the metrics endpoint serves beside it: neither needs the SDK, which costs
over a second of imports on two cores, so these live apart from :mod:`cluster.gateway.app`.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import uvicorn

from transports.errors import BusError

__all__ = ["LOOPBACK_HOSTS", "GatewayBindError", "QuietServer", "bind_listener", "bound"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` owns SIGINT / SIGTERM.

    uvicorn re-raises a captured signal after it stops, which would reach Ray's driver
    handlers before the bus is drained; here a signal only asks the server to exit.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free one).

    Raises:
        GatewayBindError: the address is in use or cannot be bound.
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise GatewayBindError(host, port, reason) from None


@contextlib.contextmanager
def bound(host: str, port: int) -> Iterator[socket.socket]:
    """:func:`bind_listener` as a context manager that closes the socket."""
    with bind_listener(host, port) as sock:
        yield sock


class GatewayBindError(BusError):
    """The gateway (or another listener of ours, see ``serves``) cannot listen there."""

    serves = "MCP"  # what the message says cannot be served

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(host, port, reason)
        self.host = host
        self.port = port
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot serve {self.serves} on {self.host}:{self.port}: {self.reason}"
