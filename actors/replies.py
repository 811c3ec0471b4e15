"""Building error answers for frames the bus could not serve.

Routers never decode bodies on the happy path; only when they must answer a request
themselves (rejection, deadline, lost worker) do they read its JSON-RPC id here.
"""

from __future__ import annotations

from typing import Any

from transports.errors import BusError, BusErrorCode
from transports.frame import Frame
from transports.message import Request, Response

__all__ = ["breaker_open_reply", "error_reply"]


def error_reply(frame: Frame, code: int, message: str, data: Any = None) -> Frame:
    """The error response frame answering the request in ``frame``.

    The reply keeps the request's envelope, so it correlates on the same key.
    """
    try:
        request = frame.decode()
        request_id = request.id if isinstance(request, Request) else None
    except BusError:
        request_id = None
    return Frame.of(frame.envelope, Response.failure(request_id, code, message, data))


def breaker_open_reply(frame: Frame, pool: str, cooldown_s: float) -> Frame:
    """The fast "circuit open" (1003) answer to a request for a failing ``pool``."""
    return error_reply(
        frame,
        BusErrorCode.CIRCUIT_OPEN,
        f"pool {pool!r} is failing; its circuit breaker is open",
        {"retryAfterSeconds": cooldown_s},
    )
