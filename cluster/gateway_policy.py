"""The gateway's policy chain: authentication, authorization, rate limits, argument
validation, PII redaction and audit.

* HTTP: :class:`BearerAuth` (ASGI) turns ``Authorization: Bearer <token>`` into a
  principal by hash lookup, or answers 401 with ``WWW-Authenticate``. The token stops
  here: only the principal's name travels on.
* Every JSON-RPC request: :class:`PolicyMiddleware` (an SDK server middleware) checks the
  allow-list and rate limits and validates ``tools/call`` arguments before anything is
  routed, and writes exactly one audit record per request - refused and failed included.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from transports.envelope import ANONYMOUS
from transports.errors import INVALID_PARAMS
from transports.policy.ratelimit import RateLimiter
from transports.policy.redaction import redact
from transports.policy.schema_check import SchemaRefused, argument_errors
from transports.policy.tokens import TokenTable

__all__ = [
    "AuditLog",
    "BearerAuth",
    "HostOriginGuard",
    "PolicyConfig",
    "PolicyMiddleware",
    "principal_of",
]

logger = logging.getLogger(__name__)

FORBIDDEN = 1009  # raybus code: the principal may not call this tool
RATE_LIMITED = 1008  # raybus code: over a token bucket; data.retryAfterSeconds says when


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenEntry(_Strict):
    principal: str
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="hex SHA-256 of the token")


class Limit(_Strict):
    rate_per_s: float = Field(gt=0)
    burst: float = Field(ge=1)


class PolicyConfig(_Strict):
    tokens: list[TokenEntry] = Field(default_factory=list)
    allow: dict[str, list[str]] | None = Field(
        None, description="principal -> tools it may call; once set, all else is denied"
    )
    rate_limit_per_principal: Limit | None = None
    rate_limit_per_tool: dict[str, Limit] = Field(default_factory=dict)
    validate_arguments: bool = True
    unvalidated_tools: list[str] = Field(
        default_factory=list, description="tools whose arguments the server checks itself"
    )
    redact_results: bool = False
    audit_path: str | None = None


def principal_of(ctx: ServerRequestContext[Any, Any]) -> str:
    """The authenticated principal of a request (anonymous without authentication)."""
    request = ctx.request
    state = getattr(request, "scope", {}).get("state", {}) if request is not None else {}
    principal = state.get("raybus_principal") if isinstance(state, dict) else None
    return principal if isinstance(principal, str) else ANONYMOUS


class BearerAuth:
    """ASGI middleware: 401 unless the bearer token's hash names a principal."""

    def __init__(self, app: ASGIApp, tokens: TokenTable, realm: str = "raybus") -> None:
        self._app = app
        self._tokens = tokens
        self._realm = realm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        value = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = value.partition(" ")
        websocket = scope["type"] == "websocket"
        if scheme.lower() != "bearer" or not token.strip():
            await self._refuse(send, None, websocket)
            return
        principal = self._tokens.principal_for(token.strip())
        if principal is None:
            await self._refuse(send, "invalid_token", websocket)
            return
        scope.setdefault("state", {})["raybus_principal"] = principal
        await self._app(scope, receive, send)

    async def _refuse(self, send: Send, error: str | None, websocket: bool = False) -> None:
        if websocket:  # before accept, a close is answered as HTTP 403 by the server
            await send({"type": "websocket.close", "code": 1008})
            return
        challenge = f'Bearer realm="{self._realm}"' + (f', error="{error}"' if error else "")
        body = json.dumps({"error": error or "authentication_required"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", challenge.encode()),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class HostOriginGuard:
    """ASGI middleware: 403 for a Host or Origin that is not ours (DNS rebinding).

    Patterns are ``host:port`` with ``*`` allowed as the port; Origins are matched the
    same way after their scheme. A request without an Origin (not a browser) passes the
    Origin check; every request must carry an allowed Host.
    """

    def __init__(self, app: ASGIApp, hosts: list[str], origins: list[str]) -> None:
        self._app = app
        self._hosts = hosts
        self._origins = origins

    @staticmethod
    def _matches(value: str, patterns: list[str]) -> bool:
        for pattern in patterns:
            if pattern.endswith(":*"):
                name = pattern[:-2]
                if value == name or (
                    value.startswith(name + ":") and value[len(name) + 1 :].isdigit()
                ):
                    return True
            elif value == pattern:
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = dict(scope.get("headers") or [])
            host = headers.get(b"host", b"").decode("latin-1")
            origin = headers.get(b"origin", b"").decode("latin-1")
            if not self._matches(host, self._hosts) or (
                origin and not self._matches(origin, self._origins)
            ):
                body = b"Forbidden: Host or Origin not allowed"
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [
                            (b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self._app(scope, receive, send)


class AuditLog:
    """Appends one JSON line per request; arguments appear only redacted and digested."""

    def __init__(self, path: str | None) -> None:
        self._path = Path(path) if path else None
        self._lock = threading.Lock()
        self.records: list[dict[str, Any]] = []  # the newest records, for status and tests

    def write(self, record: dict[str, Any]) -> None:
        self.records = [*self.records[-999:], record]
        if self._path is None:
            return
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        with self._lock, self._path.open("a", encoding="utf-8") as out:
            out.write(line)


Tools = Callable[[], Awaitable[dict[str, dict[str, Any]]]]


class PolicyMiddleware:
    """The per-request chain, as an SDK server middleware.

    Args:
        tools: returns the known tools by name (their schemas), from discovery.
    """

    def __init__(
        self,
        config: PolicyConfig,
        tools: Tools,
        audit: AuditLog,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._tools = tools
        self.audit = audit
        self._limiter = RateLimiter(
            (config.rate_limit_per_principal.rate_per_s, config.rate_limit_per_principal.burst)
            if config.rate_limit_per_principal
            else None,
            {
                tool: (limit.rate_per_s, limit.burst)
                for tool, limit in config.rate_limit_per_tool.items()
            },
            clock=clock,
        )

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: Any) -> Any:
        if ctx.request_id is None:  # notifications are not requests: nothing to audit
            return await call_next(ctx)
        started = time.perf_counter()
        principal = principal_of(ctx)
        params = dict(ctx.params or {})
        tool = params.get("name") if ctx.method == "tools/call" else None
        raw_arguments = params.get("arguments")
        arguments: dict[str, Any] = raw_arguments if isinstance(raw_arguments, dict) else {}
        outcome = "ok"
        try:
            if ctx.method == "tools/call":
                await self._admit(principal, str(tool), arguments)
            result = await call_next(ctx)
            if ctx.method == "tools/list" and self._config.allow is not None:
                result = self._only_allowed(principal, result)
            if self._config.redact_results and ctx.method == "tools/call" and result is not None:
                result = _redacted_result(result)
            return result
        except MCPError as exc:
            outcome = f"error {exc.code}"
            raise
        except Exception as exc:
            outcome = f"error {type(exc).__name__}"
            raise
        finally:
            self.audit.write(
                {
                    "time": time.time(),
                    "principal": principal,
                    "method": ctx.method,
                    "tool": tool,
                    "outcome": outcome,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                    "arguments_sha256": _digest(arguments),
                    "arguments": redact(arguments) if arguments else None,
                }
            )

    async def _admit(self, principal: str, tool: str, arguments: dict[str, Any]) -> None:
        allow = self._config.allow
        if allow is not None and tool not in allow.get(principal, []):
            raise MCPError(FORBIDDEN, f"principal {principal!r} may not call tool {tool!r}")
        wait = self._limiter.check(principal, tool)
        if wait:
            raise MCPError(
                RATE_LIMITED,
                f"rate limit exceeded for {principal!r}; retry in {wait:.2f} s",
                {"retryAfterSeconds": round(wait, 3)},
            )
        if self._config.validate_arguments and tool not in self._config.unvalidated_tools:
            schema = (await self._tools()).get(tool, {}).get("inputSchema")
            if isinstance(schema, dict):
                try:
                    problems = argument_errors(schema, arguments)
                except SchemaRefused as exc:
                    raise MCPError(
                        INVALID_PARAMS, f"tool {tool!r} cannot be validated: {exc}"
                    ) from None
                if problems:
                    raise MCPError(
                        INVALID_PARAMS, f"invalid arguments for {tool!r}: " + "; ".join(problems)
                    )

    def _only_allowed(self, principal: str, result: Any) -> Any:
        allowed = set((self._config.allow or {}).get(principal, []))
        if isinstance(result, dict) and isinstance(result.get("tools"), list):
            return {**result, "tools": [t for t in result["tools"] if t.get("name") in allowed]}
        tools = getattr(result, "tools", None)
        if tools is None:
            return result
        return result.model_copy(update={"tools": [t for t in tools if t.name in allowed]})


def _digest(arguments: dict[str, Any]) -> str:
    canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _redacted_result(result: Any) -> Any:
    if isinstance(result, BaseModel):
        cleaned = redact(result.model_dump(by_alias=True, mode="json", exclude_none=True))
        return type(result).model_validate(cleaned)
    return redact(result)
