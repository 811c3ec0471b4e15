"""The gateway's HTTP app: Streamable HTTP and WebSocket behind the door's guards.

Outermost first: the audit of what the door refuses, Host/Origin, the bearer token, then
the body is read whole (a client reset there is quiet and costs nothing) and checked by
the codec, and rate limits are applied, before the SDK's Streamable HTTP transport
parses it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import uvicorn
from mcp.server.transport_security import TransportSecuritySettings

from cluster.config import BusConfig
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

__all__ = ["LOOPBACK_HOSTS", "QuietServer", "http_app"]

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
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
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
    app.router.routes.append(websocket_route(gateway.server, "/ws", limits, gateway.audit))
    tokens = TokenTable({t.sha256: t.principal for t in settings.policy.tokens})
    # Outermost first: audit what the door refuses, Host/Origin, token, then the body is
    # read whole (a client reset there is quiet and costs nothing) and checked by the
    # codec, then rate limits are applied before the SDK's session machinery runs.
    policy = gateway.policy
    limited = RateLimitGate(app, policy.rate_refusal) if policy.limits_rates else app
    inner = DisconnectGuard(JsonBodyGuard(limited, limits), settings.path, settings.max_body_bytes)
    authenticated = BearerAuth(inner, tokens) if tokens else inner
    return AuditDoor(HostOriginGuard(authenticated, hosts, origins), gateway.audit)


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` owns SIGINT / SIGTERM.

    uvicorn re-raises a captured signal after it stops, which would reach Ray's driver
    handlers before the bus is drained; here a signal only asks the server to exit.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
