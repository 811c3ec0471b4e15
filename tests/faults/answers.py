"""What a well-formed answer from the gateway is, for the hostile-client and fuzzing cases.

Every HTTP answer must be one of: a JSON-RPC result or error (as JSON, or as the events
of an SSE stream), an empty 202 (a notification or response accepted), a redirect, or a 4xx whose
body says what was wrong. Never a 5xx, never a bare traceback, never an "internal error"
(-32603: an exception the gateway did not expect, turned into an error by the SDK).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["INTERNAL_ERROR", "jsonrpc_messages", "malformation"]

INTERNAL_ERROR = -32603


def jsonrpc_messages(content_type: str, body: bytes) -> list[Any]:
    """The JSON values an answer carries: its JSON body, or each SSE event's data.

    Raises:
        ValueError: a body that is not the JSON (or SSE of JSON) it claims to be.
    """
    kind = content_type.split(";")[0].strip().lower()
    text = body.decode("utf-8")
    if kind == "text/event-stream":
        return [
            json.loads(line[len("data:") :])
            for line in text.splitlines()
            if line.startswith("data:") and line[len("data:") :].strip()
        ]
    if kind == "application/json":
        return [json.loads(text)] if text.strip() else []
    raise ValueError(f"content type {content_type!r} is neither JSON nor SSE")


def _message_problem(message: Any) -> str | None:
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return f"not a JSON-RPC 2.0 message: {str(message)[:200]}"
    if "method" in message:
        return None  # a notification or request the server sends about the call
    if ("result" in message) == ("error" in message):
        return f"a response needs exactly one of result / error: {str(message)[:200]}"
    error = message.get("error")
    if error is not None:
        if not isinstance(error, dict) or not isinstance(error.get("code"), int):
            return f"an error without an integer code: {str(message)[:200]}"
        if not isinstance(error.get("message"), str) or not error["message"]:
            return f"an error without a message: {str(message)[:200]}"
        if error["code"] == INTERNAL_ERROR:
            return f"an internal error (an unexpected exception): {str(message)[:300]}"
    return None


def malformation(status: int, content_type: str, body: bytes) -> str | None:
    """Why this answer is not well formed (see the module docstring), or None if it is."""
    if status >= 500 or status < 200:
        return f"HTTP {status}: {body[:300]!r}"
    if b"Traceback (most recent call last)" in body:
        return f"a traceback in the answer: {body[:300]!r}"
    if 300 <= status < 400:
        return None  # a redirect (Starlette's, "/mcp/" -> "/mcp") says where to go
    if status == 202:
        return None if not body.strip() else f"202 with a body: {body[:200]!r}"
    kind = content_type.split(";")[0].strip().lower()
    if status >= 400 and kind not in ("application/json", "text/event-stream"):
        # A plain-text refusal (403 Host/Origin, 404 elsewhere) must still say why.
        return None if body.strip() else f"HTTP {status} with an empty body"
    try:
        messages = jsonrpc_messages(content_type, body)
    except ValueError as exc:
        return f"HTTP {status}, body not what it claims ({exc}): {body[:200]!r}"
    if status >= 400:
        if not messages:
            return f"HTTP {status} with an empty body"
        first = messages[0]
        if isinstance(first, dict) and "jsonrpc" not in first and first.get("error"):
            return None  # {"error": ...}: the door's 401 says why in plain JSON
        return _message_problem(first)
    if not messages:
        return f"HTTP {status} without an answer"
    for message in messages:
        problem = _message_problem(message)
        if problem is not None:
            return problem
    return None
