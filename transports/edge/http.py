"""The client side of one 2026-07-28 stateless Streamable HTTP request, on ``httpx2``.

One POST per call, no session to lose. The request carries what the era requires of each
request (MCP ``basic/transports``): the ``_meta`` envelope
(``io.modelcontextprotocol/protocolVersion``, ``.../clientCapabilities``, ``.../clientInfo``)
and the routing headers ``MCP-Protocol-Version``, ``Mcp-Method`` and ``Mcp-Name`` that
must agree with the body; plus raybus's ``io.raybus/idempotency-key`` and
``io.raybus/labels``. The answer is JSON, or ``text/event-stream`` whose last event with
the request's id is the response (progress and log notifications before it are skipped).

What the journal must know is whether a failed attempt **may have left**:

* :class:`NotSent` - ``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``, a 401/403
  (the door refused it before anything ran): certainly not delivered, safe to send as new.
  Other 4xx statuses without a JSON-RPC answer (404, 429) are refusals at the door too.
* :class:`Rejected` - 400/413/414/415/422 without a JSON-RPC answer: nothing ran and a
  resend would be refused the same way; the row fails.
* :class:`AnswerTooLarge` - an answer longer than ``max_answer_bytes`` (a bound on what
  a device stores): the call ran, and a resend would be answered the same, so the row
  fails (INTERNAL_ERROR), never resent.
* :class:`MaybeSent` - the body may have been written: write/read errors, a read
  timeout, a closed connection, an HTTP 5xx without a JSON-RPC answer, an answer that is
  not the request's. The row stays ``sending`` and is resent with the same key.

Tool names that are not plain header-safe ASCII are sent base64-wrapped
(``=?base64?...?=``), the rule the SDK's server decodes with.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any, Final

import httpx2 as httpx

from transports.errors import BusError
from transports.labels import META_KEY as LABELS_META

__all__ = [
    "IDEMPOTENCY_EXTENSION",
    "IDEMPOTENCY_META",
    "PROTOCOL_VERSION",
    "AnswerTooLarge",
    "AuthRefused",
    "HttpLink",
    "MaybeSent",
    "NotSent",
    "Rejected",
]

PROTOCOL_VERSION: Final = "2026-07-28"
IDEMPOTENCY_META: Final = "io.raybus/idempotency-key"
IDEMPOTENCY_EXTENSION: Final = "io.raybus/idempotency"
_CLIENT_INFO: Final = {"name": "raybus-edge", "version": "1"}
# 4xx statuses that say "this request is wrong" rather than "not now".
_REJECTED: Final = frozenset({400, 413, 414, 415, 422})
_HEADER_SAFE: Final = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")


class LinkFailure(BusError):
    """One attempt got no usable answer; ``reason`` says why."""

    retriable = True

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class NotSent(LinkFailure):
    """Certainly not delivered (no connection, or refused at the door)."""


class AuthRefused(NotSent):
    """HTTP 401/403: the token is not accepted; nothing ran."""


class Rejected(LinkFailure):
    """A 4xx refusal without a JSON-RPC answer (malformed, too large): nothing ran, and
    sending it again would be refused again, so the row fails."""

    retriable = False


class AnswerTooLarge(Rejected):
    """The answer is longer than the link takes: the call ran, its answer is not kept;
    a resend (same key) would get the same answer, so the row fails."""


class MaybeSent(LinkFailure):
    """The request may have reached the bus; only a resend with its key is safe."""


def _header_value(value: str) -> str:
    if _HEADER_SAFE.fullmatch(value) and not value.startswith("=?base64?"):
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode('ascii')}?="


class HttpLink:
    """POSTs to one MCP endpoint with one ``httpx2`` client (connections reused).

    ``max_connections`` should exceed the sender's window (the prober needs one too).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        call_timeout_s: float,
        connect_timeout_s: float = 10.0,
        max_connections: int = 32,
        max_answer_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._url = url
        self._token = token
        self._max_answer_bytes = max_answer_bytes
        timeout = httpx.Timeout(call_timeout_s, connect=connect_timeout_s)
        limits = httpx.Limits(max_connections=max_connections)
        # trust_env off: a device's proxy variables must not silently reroute the bus link.
        self._http = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)

    def request_body(
        self, request_id: str, method: str, params: Mapping[str, Any], meta: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The JSON-RPC request with the era's envelope and ``meta`` in ``params._meta``."""
        envelope = {
            "io.modelcontextprotocol/protocolVersion": PROTOCOL_VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": _CLIENT_INFO,
            **meta,
        }
        return {
            "jsonrpc": "2.0",
            "id": request_id,
            "method": method,
            "params": {**params, "_meta": envelope},
        }

    async def call_tool(
        self,
        request_id: str,
        params: Mapping[str, Any],
        *,
        idempotency_key: str,
        labels: Mapping[str, str],
    ) -> dict[str, Any]:
        """POST one ``tools/call``; the JSON-RPC response (result or error).

        Raises:
            NotSent: certainly not delivered (``AuthRefused`` for 401/403).
            MaybeSent: may have been delivered; resend only with the same key.
        """
        meta: dict[str, Any] = {IDEMPOTENCY_META: idempotency_key}
        if labels:
            meta[LABELS_META] = dict(labels)
        body = self.request_body(request_id, "tools/call", params, meta)
        return await self._post(body, name=str(params.get("name", "")))

    async def discover(self) -> dict[str, Any]:
        """``server/discover``: the server's result (capabilities, extensions).

        Raises:
            NotSent, MaybeSent: as :meth:`call_tool` (discover has no side effect).
        """
        body = self.request_body("discover", "server/discover", {}, {})
        response = await self._post(body, name=None)
        result = response.get("result")
        if not isinstance(result, dict):
            raise MaybeSent(f"server/discover answered {json.dumps(response)[:200]}")
        return result

    async def close(self) -> None:
        await self._http.aclose()

    async def _post(self, body: dict[str, Any], *, name: str | None) -> dict[str, Any]:
        headers = {
            "accept": "application/json, text/event-stream",
            "content-type": "application/json",
            "mcp-protocol-version": PROTOCOL_VERSION,
            "mcp-method": str(body["method"]),
        }
        if name is not None:
            headers["mcp-name"] = _header_value(name)
        if self._token is not None:
            headers["authorization"] = f"Bearer {self._token}"
        content = json.dumps(body, separators=(",", ":")).encode()
        try:
            async with self._http.stream(
                "POST", self._url, content=content, headers=headers
            ) as response:
                status = response.status_code
                kind = response.headers.get("content-type", "")
                text = await self._read_bounded(response)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise NotSent(f"{type(exc).__name__}: {exc}") from exc
        except httpx.HTTPError as exc:
            raise MaybeSent(f"{type(exc).__name__}: {exc}") from exc
        if status in (401, 403):
            raise AuthRefused(f"HTTP {status} from {self._url}")
        answer = _response_for(body["id"], kind, text)
        if answer is not None:
            return answer
        reason = f"HTTP {status} without a JSON-RPC answer: {text[:200]!r}"
        if status in _REJECTED:
            raise Rejected(reason)
        if 400 <= status < 500:  # refused at the door (404 path, 429 limit): nothing ran
            raise NotSent(reason)
        raise MaybeSent(reason)

    async def _read_bounded(self, response: httpx.Response) -> str:
        """The body as text, refused past ``max_answer_bytes`` (never held whole)."""
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_answer_bytes:
                raise AnswerTooLarge(
                    f"the answer is larger than max_answer_bytes ({self._max_answer_bytes}); "
                    "the call may have run"
                )
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")


def _response_for(request_id: Any, content_type: str, text: str) -> dict[str, Any] | None:
    """The JSON-RPC response with ``request_id`` in a JSON or SSE body, else None."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "text/event-stream":
        candidates = [
            line[len("data:") :].strip() for line in text.splitlines() if line.startswith("data:")
        ]
    elif kind == "application/json":
        candidates = [text]
    else:
        return None
    for text in reversed(candidates):
        try:
            message = json.loads(text)
        except ValueError:
            continue
        if (
            isinstance(message, dict)
            and message.get("id") == request_id
            and ("result" in message or "error" in message)
        ):
            return message
    return None
