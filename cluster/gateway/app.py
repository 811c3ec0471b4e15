"""The gateway's HTTP app: Streamable HTTP and WebSocket behind the door's guards.

Outermost first: the audit of what the door refuses, Host/Origin, the bearer token, then
the body is read whole (a client reset there is quiet and costs nothing) and checked by
the codec, and rate limits are applied, before the SDK's Streamable HTTP transport
parses it.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from mcp.server.transport_security import TransportSecuritySettings

from cluster.config import BusConfig
from cluster.gateway.direct_calls import DirectToolCalls
from cluster.gateway.disconnects import DisconnectGuard
from cluster.gateway.event_store import BoundedEventStore
from cluster.gateway.policy.http_guards import (
    AuditDoor,
    BearerAuth,
    HostOriginGuard,
    JsonBodyGuard,
    RateLimitGate,
)
from cluster.gateway.policy.tokens import TokenTable
from cluster.gateway.server import Gateway
from cluster.gateway.websocket import websocket_route
from transports.codec import DecodeLimits
from transports.errors import BusError

__all__ = [
    "LOOPBACK_HOSTS",
    "GatewayBindError",
    "QuietServer",
    "bind_listener",
    "http_app",
    "http_server",
]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# How soon a client whose SSE stream closed mid-call should reconnect (SEP-1699).
_SSE_RETRY_MS = 500


def http_app(gateway: Gateway, config: BusConfig, port: int) -> Any:
    """The Starlette app: Streamable HTTP at the configured path, Origin/Host checked."""
    settings = config.gateway
    # Any port on a loopback name: DNS rebinding needs a foreign *name*, and the port may
    # be chosen by the OS (gateway.port 0).
    hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    if settings.host not in LOOPBACK_HOSTS:
        hosts.append(f"{settings.host}:{port}")
    origins = [f"http://{h}" for h in hosts] + list(settings.allowed_origins)
    # HostOriginGuard (outermost, on HTTP and WebSocket) already refused a foreign Host or
    # Origin: the SDK's own copy of the check re-parsed the headers of every request
    # (~7 % of the gateway's CPU under load) and is switched off.
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=False, allowed_hosts=hosts, allowed_origins=origins
    )
    app = gateway.server.streamable_http_app(
        streamable_http_path=settings.path,
        event_store=BoundedEventStore(),
        retry_interval=_SSE_RETRY_MS,
        max_request_body_size=settings.max_body_bytes,
        session_idle_timeout=settings.session_idle_timeout_s,
        transport_security=security,
        host=settings.host,
    )
    limits = DecodeLimits(max_message_bytes=settings.max_body_bytes)
    app.router.routes.append(
        websocket_route(gateway.server, "/ws", limits, gateway.audit, gateway.refusals)
    )
    tokens = TokenTable({t.sha256: t.principal for t in settings.policy.tokens})
    # Outermost first: audit what the door refuses, Host/Origin, token, then the body is
    # read whole (a client reset there is quiet and costs nothing) and checked by the
    # codec, then rate limits are applied before the SDK's session machinery runs.
    policy = gateway.policy
    direct = DirectToolCalls(app, gateway, settings.path)
    limited = RateLimitGate(direct, policy.rate_refusal) if policy.limits_rates else direct
    inner = DisconnectGuard(JsonBodyGuard(limited, limits), settings.path, settings.max_body_bytes)
    authenticated = BearerAuth(inner, tokens) if tokens else inner
    guarded = HostOriginGuard(authenticated, hosts, origins)
    return AuditDoor(guarded, gateway.audit, gateway.refusals)


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` owns SIGINT / SIGTERM.

    uvicorn re-raises a captured signal after it stops, which would reach Ray's driver
    handlers before the bus is drained; here a signal only asks the server to exit.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_server(gateway: Gateway, config: BusConfig, port: int) -> QuietServer:
    """uvicorn serving :func:`http_app` (the caller passes the bound socket to ``serve``)."""
    settings = config.gateway
    return QuietServer(
        uvicorn.Config(
            http_app(gateway, config, port),
            host=settings.host,
            port=port,
            log_level="warning",
            lifespan="on",
            ws_max_size=settings.max_body_bytes,
        )
    )


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
