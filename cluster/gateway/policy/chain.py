"""The gateway's policy chain: authentication, authorization, rate limits, argument
validation, PII redaction and audit.

* HTTP and WebSocket: the ASGI guards of :mod:`cluster.gateway.policy.http_guards` (Host/Origin,
  bearer tokens, the codec's checks on bodies, audit of what they refuse), and with OAuth
  those of :mod:`cluster.gateway.policy.resource_server` (access tokens, scopes, RFC 9728).
* Every JSON-RPC request: :class:`PolicyMiddleware` (an SDK server middleware) refuses
  first what costs nothing to refuse - over a rate limit, then not on the principal's
  allow-list (every method family, deny by default: :mod:`cluster.gateway.policy.allowlist`),
  or without a tool's OAuth scope - then validates ``tools/call`` arguments, before
  anything is routed; filters lists to what the principal may use; and writes exactly one
  audit record per client request, refused and failed included, off the event loop
  (:mod:`cluster.gateway.policy.audit`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from cluster.gateway.policy.allowlist import LISTS, TASK_METHODS, AllowList, subject_of
from cluster.gateway.policy.audit import ARGUMENTS, AuditLog
from cluster.gateway.policy.http_guards import (
    AUDITED,
    CLIENT_METHOD,
    OAUTH_PRINCIPAL,
    PRINCIPAL,
    RATE_CHARGED,
    BearerAuth,
    HostOriginGuard,
    Refusals,
)
from cluster.gateway.policy.oauth import TokenPrincipal, audit_fields, missing_scopes
from cluster.gateway.policy.ratelimit import RateLimiter
from cluster.gateway.policy.redaction import redact
from cluster.gateway.policy.schema_check import SchemaRefused, argument_errors
from cluster.gateway.policy.settings import PolicyConfig
from transports.envelope import ANONYMOUS
from transports.errors import INVALID_PARAMS, BusErrorCode

__all__ = [
    "AuditLog",
    "BearerAuth",
    "HostOriginGuard",
    "PolicyConfig",
    "PolicyMiddleware",
    "principal_of",
    "request_state",
    "token_labels_of",
]


def _state_of(ctx: ServerRequestContext[Any, Any]) -> MutableMapping[str, Any] | None:
    # The ASGI scope's state of the HTTP request or WebSocket the message arrived on.
    request = ctx.request
    state = getattr(request, "scope", {}).get("state") if request is not None else None
    return state if isinstance(state, MutableMapping) else None


def request_state(ctx: ServerRequestContext[Any, Any]) -> MutableMapping[str, Any] | None:
    """The HTTP request's state the doors filled in (None off HTTP: stdio, in-memory)."""
    return _state_of(ctx)


def token_labels_of(state: Mapping[str, Any] | None) -> Mapping[str, str]:
    """The labels the request's OAuth access token pins (``oauth.label_claims``)."""
    token = state.get(OAUTH_PRINCIPAL) if state is not None else None
    return token.labels if isinstance(token, TokenPrincipal) else {}


def principal_of(ctx: ServerRequestContext[Any, Any]) -> str:
    """The authenticated principal of a request (anonymous without authentication)."""
    state = _state_of(ctx)
    principal = state.get(PRINCIPAL) if state is not None else None
    return principal if isinstance(principal, str) else ANONYMOUS


Tools = Callable[[], Awaitable[dict[str, dict[str, Any]]]]

# A list result's field as a pydantic attribute, and its items' key as one.
_ATTRIBUTES = {"resourceTemplates": "resource_templates", "uriTemplate": "uri_template"}


class PolicyMiddleware:
    """The per-request chain, as an SDK server middleware.

    Args:
        config: the policy.
        tools: returns the known tools by name (their schemas), from discovery.
        audit: where records go; the caller closes it.
        clock: the rate limiter's clock.
        refusals: counts what the chain refuses (``rate_limited``, ``not_allowed``,
            ``invalid_arguments``) for the gateway's metrics.
    """

    def __init__(
        self,
        config: PolicyConfig,
        tools: Tools,
        audit: AuditLog,
        clock: Callable[[], float] = time.monotonic,
        refusals: Refusals | None = None,
    ) -> None:
        self._config = config
        self._tools = tools
        self.audit = audit
        self._refusals = refusals
        self._allow = AllowList(config.allow)
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
        principal = principal_of(ctx)
        state = _state_of(ctx)
        if state is not None and state.get(CLIENT_METHOD, ctx.method) != ctx.method:
            # Not the client's request but the SDK's own, made while serving it (the
            # 2026-07-28 transport lists tools to check a tools/call's Mcp-Param headers):
            # it spends no token and leaves no record, and sees only allowed tools.
            return self._only_allowed(principal, ctx.method, await call_next(ctx))
        return await self.enforce(
            principal, ctx.method, ctx.params or {}, state, lambda: call_next(ctx)
        )

    async def enforce(
        self,
        principal: str,
        method: str,
        params: Mapping[str, Any],
        state: MutableMapping[str, Any] | None,
        call_next: Callable[[], Awaitable[Any]],
    ) -> Any:
        """Run one client request through the chain; ``call_next`` serves it.

        The SDK middleware and the gateway's direct path for 2026-07-28 tool calls
        both come here, so a request is refused, validated, filtered and audited the
        same way whichever path serves it.
        """
        if state is not None:
            state[AUDITED] = True
        started = time.perf_counter()
        name = params.get("name")
        tool = name if method == "tools/call" and isinstance(name, str) else None
        subject = subject_of(method, params)
        record: dict[str, Any] = {
            "time": time.time(),
            "principal": principal,
            "method": method,
            "tool": tool,
        }
        if subject is not None and subject.name is not None and tool is None:
            record["target"] = subject.name
        task_id = params.get("taskId")
        if method in TASK_METHODS and isinstance(task_id, str):
            record["target"] = task_id
        token = state.get(OAUTH_PRINCIPAL) if state is not None else None
        if isinstance(token, TokenPrincipal):  # who the access token speaks for, never it
            record.update(audit_fields(token))
        outcome = "ok"
        try:
            # Over HTTP the door (RateLimitGate) charged the buckets already.
            charged = state is not None and state.get(RATE_CHARGED, False)
            self._refuse_cheaply(principal, method, params, tool, charged)
            if isinstance(token, TokenPrincipal) and tool is not None:
                self._check_tool_scopes(token, tool)
            arguments = params.get("arguments")
            if isinstance(arguments, dict):
                record[ARGUMENTS] = arguments  # the audit writer redacts and digests them
            if tool is not None:
                await self._validate(tool, arguments if isinstance(arguments, dict) else {})
            result = self._only_allowed(principal, method, await call_next())
            created = (
                result.get("task") if method == "tools/call" and isinstance(result, dict) else None
            )
            if isinstance(created, dict):  # a task-augmented call: which task it made
                outcome = f"task {created.get('taskId')}"
            # A task's result reaches its caller through tasks/result: redacted alike.
            carries_result = tool is not None or method == "tasks/result"
            if self._config.redact_results and carries_result and result is not None:
                result = _redacted_result(result)
            return result
        except MCPError as exc:
            outcome = f"error {exc.code}"
            raise
        except Exception as exc:
            outcome = f"error {type(exc).__name__}"
            raise
        finally:
            record["outcome"] = outcome
            record["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
            self.audit.write(record)

    @property
    def limits_rates(self) -> bool:
        """Whether any rate limit is configured."""
        return bool(self._config.rate_limit_per_principal or self._config.rate_limit_per_tool)

    def rate_refusal(self, principal: str, tool: str | None) -> MCPError | None:
        """Spend one request's tokens; the error to answer when over a limit, else None."""
        wait = self._limiter.check(principal, tool)
        if not wait:
            return None
        hint = math.ceil(wait * 1000) / 1000  # never "retry in 0": at least 1 ms
        return MCPError(
            BusErrorCode.RATE_LIMITED,
            f"rate limit exceeded for {principal!r}; retry in {hint:.3f} s",
            {"retryAfterSeconds": hint},
        )

    def _refuse_cheaply(
        self,
        principal: str,
        method: str,
        params: Mapping[str, Any],
        tool: str | None,
        charged: bool,
    ) -> None:
        # Before any schema, catalog or argument is looked at: a flood of refused
        # requests must cost next to nothing, or it slows every other client.
        refused = None if charged else self.rate_refusal(principal, tool)
        if refused is not None:
            raise self._refused("rate_limited", refused)
        if not self._allow.permits(principal, method, params):
            subject = subject_of(method, params)
            what = f"{subject.kind.value} {subject.name!r}" if subject else f"method {method!r}"
            forbidden = MCPError(
                BusErrorCode.FORBIDDEN, f"principal {principal!r} may not use {what}"
            )
            raise self._refused("not_allowed", forbidden)

    def _check_tool_scopes(self, token: TokenPrincipal, tool: str) -> None:
        # Over HTTP the door (ToolScopeGate) answered 403 already; this covers the
        # WebSocket, whose messages pass no HTTP door.
        oauth = self._config.oauth
        missing = missing_scopes(token.scopes, oauth.tool_scopes.get(tool, [])) if oauth else []
        if missing:
            error = MCPError(
                BusErrorCode.FORBIDDEN, f"tool {tool!r} needs scope {' '.join(missing)}"
            )
            raise self._refused("insufficient_scope", error)

    def _refused(self, reason: str, error: MCPError) -> MCPError:
        if self._refusals is not None:
            self._refusals.refused(reason)
        return error

    async def _validate(self, tool: str, arguments: dict[str, Any]) -> None:
        if not self._config.validate_arguments or tool in self._config.unvalidated_tools:
            return
        schema = (await self._tools()).get(tool, {}).get("inputSchema")
        if not isinstance(schema, dict):
            return
        try:
            problems = argument_errors(schema, arguments)
        except SchemaRefused as exc:
            error = MCPError(INVALID_PARAMS, f"tool {tool!r} cannot be validated: {exc}")
            raise self._refused("invalid_arguments", error) from None
        if problems:
            error = MCPError(
                INVALID_PARAMS, f"invalid arguments for {tool!r}: " + "; ".join(problems)
            )
            raise self._refused("invalid_arguments", error)

    def _only_allowed(self, principal: str, method: str, result: Any) -> Any:
        if not self._allow.enabled or method not in LISTS or result is None:
            return result
        field, key, kind = LISTS[method]

        def allowed(item: Any) -> bool:
            value = (
                item.get(key)
                if isinstance(item, dict)
                else getattr(item, _ATTRIBUTES.get(key, key), None)
            )
            return value is not None and self._allow.permits_item(principal, kind, str(value))

        if isinstance(result, dict):
            items = result.get(field)
            if not isinstance(items, list):
                return result
            return {**result, field: [item for item in items if allowed(item)]}
        attribute = _ATTRIBUTES.get(field, field)
        items = getattr(result, attribute, None)
        if not isinstance(items, list) or not isinstance(result, BaseModel):
            return result
        return result.model_copy(update={attribute: [item for item in items if allowed(item)]})


def _redacted_result(result: Any) -> Any:
    if isinstance(result, BaseModel):
        cleaned = redact(result.model_dump(by_alias=True, mode="json", exclude_none=True))
        return type(result).model_validate(cleaned)
    return redact(result)
