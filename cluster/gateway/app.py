"""The gateway's HTTP app: Streamable HTTP and WebSocket behind the door's guards.

Outermost first: the audit of what the door refuses, Host/Origin, the OAuth resource
metadata (public) and the bearer token (static, or an OAuth access token), then
the body is read whole (a client reset there is quiet and costs nothing) and checked by
the codec, and rate limits are applied, before the SDK's Streamable HTTP transport
parses it.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from mcp.server.transport_security import TransportSecuritySettings

from cluster.config import BusConfig
from cluster.gateway.direct_calls import DirectToolCalls
from cluster.gateway.disconnects import DisconnectGuard
from cluster.gateway.event_store import BoundedEventStore, scope_events_per_session
from cluster.gateway.listener import (
    LOOPBACK_HOSTS,
    GatewayBindError,
    QuietServer,
    bind_listener,
    bound,
)
from cluster.gateway.policy.http_guards import (
    AuditDoor,
    BearerAuth,
    HostOriginGuard,
    JsonBodyGuard,
    RateLimitGate,
)
from cluster.gateway.policy.resource_server import (
    OAuthBearerAuth,
    ResourceMetadataRoute,
    ToolScopeGate,
)
from cluster.gateway.policy.tokens import TokenTable
from cluster.gateway.server import Gateway
from cluster.gateway.slow_clients import head_deadline_protocol
from cluster.gateway.tasks_input import TaskInputGuard
from cluster.gateway.websocket import websocket_route
from transports.codec import DecodeLimits

__all__ = [
    "LOOPBACK_HOSTS",
    "GatewayBindError",
    "QuietServer",
    "bind_listener",
    "bound",
    "http_app",
    "http_server",
]

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
    # A browser page's Origin carries the scheme it was loaded with: https once served so.
    origins = [f"{settings.scheme}://{h}" for h in hosts] + list(settings.allowed_origins)
    # HostOriginGuard (outermost, on HTTP and WebSocket) already refused a foreign Host or
    # Origin: the SDK's own copy of the check re-parsed the headers of every request
    # (~7 % of the gateway's CPU under load) and is switched off.
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=False, allowed_hosts=hosts, allowed_origins=origins
    )
    app = gateway.server.streamable_http_app(
        streamable_http_path=settings.path,
        event_store=BoundedEventStore(finished_kept_s=settings.resume_window_s),
        retry_interval=_SSE_RETRY_MS,
        max_request_body_size=settings.max_body_bytes,
        session_idle_timeout=settings.session_idle_timeout_s,
        transport_security=security,
        host=settings.host,
    )
    scope_events_per_session(gateway.server.session_manager)
    limits = DecodeLimits(max_message_bytes=settings.max_body_bytes)
    app.router.routes.append(
        websocket_route(gateway.server, "/ws", limits, gateway.audit, gateway.refusals)
    )
    tokens = TokenTable({t.sha256: t.principal for t in settings.policy.tokens})
    # Outermost first: audit what the door refuses, Host/Origin, token, then the body is
    # read whole (a client reset there is quiet and costs nothing) and checked by the
    # codec, then rate limits are applied before the SDK's session machinery runs.
    policy = gateway.policy
    oauth, verifier = settings.policy.oauth, gateway.token_verifier
    direct = DirectToolCalls(app, gateway, settings.path)
    limited = RateLimitGate(direct, policy.rate_refusal) if policy.limits_rates else direct
    scoped = ToolScopeGate(limited, oauth) if oauth is not None and oauth.tool_scopes else limited
    parsed: Any = scoped
    if gateway.tasks is not None:
        # A client's answer to a task's input request must be one its session awaits.
        parsed = TaskInputGuard(scoped, gateway.tasks.inputs)
    inner = DisconnectGuard(
        JsonBodyGuard(parsed, limits),
        settings.path,
        settings.max_body_bytes,
        settings.request_read_timeout_s,
    )
    authenticated: Any = inner
    if oauth is not None and verifier is not None:
        # The resource metadata is public (clients read it to find the issuer).
        authenticated = ResourceMetadataRoute(OAuthBearerAuth(inner, verifier, tokens), oauth)
    elif tokens:
        authenticated = BearerAuth(inner, tokens)
    guarded = HostOriginGuard(authenticated, hosts, origins)
    return AuditDoor(guarded, gateway.audit, gateway.refusals)


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
            ssl_certfile=settings.tls.certfile if settings.tls else None,
            ssl_keyfile=settings.tls.keyfile if settings.tls else None,
            http=head_deadline_protocol(settings.request_read_timeout_s),
            timeout_keep_alive=settings.keep_alive_timeout_s,
        )
    )
