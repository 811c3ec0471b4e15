"""The sender's pure rules: which answers are resent, and the backoff schedule."""

from __future__ import annotations

from typing import Any

import pytest

from transports.edge.pump import Backoff, is_transient
from transports.errors import INVALID_PARAMS, BusErrorCode


def error(code: int, stage: str | None = None) -> dict[str, Any]:
    data = {"stage": stage} if stage is not None else None
    return {"jsonrpc": "2.0", "id": "r", "error": {"code": code, "message": "m", "data": data}}


@pytest.mark.parametrize(
    "response",
    [
        error(BusErrorCode.OVERLOADED),
        error(BusErrorCode.CIRCUIT_OPEN),
        error(BusErrorCode.SHUTTING_DOWN),
        error(BusErrorCode.RATE_LIMITED),
        error(BusErrorCode.OUTCOME_UNKNOWN, "send"),
        error(BusErrorCode.OUTCOME_UNKNOWN, "running"),
        # May have run: the resend carries the same key, so the ledger answers it.
        error(BusErrorCode.OUTCOME_UNKNOWN),
        error(BusErrorCode.DEADLINE_EXCEEDED, "queue"),
    ],
)
def test_answers_that_mean_not_now_are_resent(response: dict[str, Any]) -> None:
    assert is_transient(response)


@pytest.mark.parametrize(
    "response",
    [
        {"jsonrpc": "2.0", "id": "r", "result": {"content": []}},
        error(BusErrorCode.OUTCOME_UNKNOWN, "run"),  # the ledger's "lost"
        error(BusErrorCode.DEADLINE_EXCEEDED),
        error(BusErrorCode.UPSTREAM_FAILED),
        error(BusErrorCode.FORBIDDEN),
        error(INVALID_PARAMS),
        error(1011),  # idempotency key reused with different arguments
    ],
)
def test_every_other_answer_is_final(response: dict[str, Any]) -> None:
    assert not is_transient(response)


def test_the_backoff_doubles_from_half_a_second_to_thirty_jittered_and_resets() -> None:
    backoff = Backoff()
    delays = [backoff.next_delay() for _ in range(10)]
    ceilings = [0.5, 1, 2, 4, 8, 16, 30, 30, 30, 30]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert 0.25 <= backoff.next_delay() <= 0.5
