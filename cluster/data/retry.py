"""Which failed tool calls of a batch are tried again, and after how long.

A batch job should slow down when the bus pushes back, not fill its ``error`` column with
refusals. But a call may only be repeated when repeating it cannot do harm twice:

=========================================  ==========================  ===================
error                                      did a worker start it?      tried again
=========================================  ==========================  ===================
``OVERLOADED`` 1002 (router queue full)    no: refused at the router   always
``CIRCUIT_OPEN`` 1003 (breaker open)       no: refused at the router   always
``RATE_LIMITED`` 1008 (gateway bucket)     no: refused at the door     always
``OUTCOME_UNKNOWN`` 1004 (worker lost)     maybe                       if the tool is safe
``SHUTTING_DOWN`` 1006 (worker draining)   maybe (in-flight calls)     if the tool is safe
``UPSTREAM_FAILED`` 1007 (server crashed)  maybe                       if the tool is safe
``DEADLINE_EXCEEDED`` 1001, ``BusTimeout``  maybe (it may still run)    if the tool is safe
``ConnectionClosed`` (router unreachable)  maybe                       if the tool is safe
anything else (tool errors, bad params,    yes, or never will be       never: the row's
unknown tool, forbidden, cancelled)                                    answer
=========================================  ==========================  ===================

A tool is *safe* to repeat when its catalog entry says so with the MCP tool annotations
``readOnlyHint`` or ``idempotentHint`` (the same rule the router applies when it re-queues
the calls of a lost worker).

Waits grow exponentially from ``initial_backoff_s`` up to ``max_backoff_s`` (at least the
``retryAfterSeconds`` the bus suggests, never more than ``max_backoff_s``), with jitter so
that a pool of callers refused together does not come back together; after
``max_attempts`` tries the last error is the row's answer. A timed-out try already waited
its whole deadline, so timeouts are repeated at most ``max_timeout_retries`` times (once
by default): ten tries of a 60 s deadline would hold a batch for ten minutes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from transports.errors import BusError, BusErrorCode, BusTimeout, CallError, ConnectionClosed

__all__ = [
    "RetryPolicy",
    "call_with_retry",
    "is_safe_to_repeat",
    "retry_delay_s",
    "should_retry",
    "timed_out",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Refused before any worker saw the call: repeating it can never run the tool twice.
_REFUSED_BEFORE_WORK = frozenset(
    {BusErrorCode.OVERLOADED, BusErrorCode.CIRCUIT_OPEN, BusErrorCode.RATE_LIMITED}
)
# Transient, but the tool may have run (or may still be running).
_MAY_HAVE_RUN = frozenset(
    {
        BusErrorCode.OUTCOME_UNKNOWN,
        BusErrorCode.SHUTTING_DOWN,
        BusErrorCode.UPSTREAM_FAILED,
        BusErrorCode.DEADLINE_EXCEEDED,
    }
)


# 2**64 times any positive initial wait is past any cap; beyond that a float overflows.
_MAX_DOUBLINGS = 64


class RetryPolicy(BaseModel):
    """How patient a batch is with a bus that pushes back (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(10, ge=1, description="tries per row, the first one included")
    initial_backoff_s: float = Field(0.1, gt=0)
    max_backoff_s: float = Field(5.0, gt=0)
    max_timeout_retries: int = Field(1, ge=0, description="repeats of a call that timed out")

    @model_validator(mode="after")
    def _backoff_grows(self) -> RetryPolicy:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must be at least initial_backoff_s")
        return self


def is_safe_to_repeat(tool: Mapping[str, Any]) -> bool:
    """Whether the tool's annotations promise that running it twice does no harm."""
    annotations = tool.get("annotations") or {}
    return bool(annotations.get("readOnlyHint") or annotations.get("idempotentHint"))


def timed_out(error: BusError) -> bool:
    """Whether the try waited out a deadline (the caller's or the pool's)."""
    if isinstance(error, CallError):
        return error.code == BusErrorCode.DEADLINE_EXCEEDED
    return isinstance(error, BusTimeout)


def should_retry(
    error: BusError, *, attempt: int, timeouts: int, tool_is_safe: bool, policy: RetryPolicy
) -> bool:
    """Whether the ``attempt``-th try (1 = the first) that ended in ``error`` is repeated.

    ``timeouts`` counts the earlier tries that timed out, this one not included.
    """
    if attempt >= policy.max_attempts:
        return False
    if timed_out(error) and timeouts >= policy.max_timeout_retries:
        return False
    if isinstance(error, CallError):
        if error.code in _REFUSED_BEFORE_WORK:
            return True
        return tool_is_safe and error.code in _MAY_HAVE_RUN
    return tool_is_safe and isinstance(error, BusTimeout | ConnectionClosed)


def retry_delay_s(
    error: BusError, *, attempt: int, policy: RetryPolicy, rng: random.Random
) -> float:
    """How long to wait before try ``attempt + 1``: exponential, jittered, bounded."""
    backoff = min(
        policy.max_backoff_s, policy.initial_backoff_s * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS)
    )
    backoff = max(backoff, min(_retry_after_s(error), policy.max_backoff_s))
    # Half fixed, half random: callers refused together spread out, none returns at once.
    return backoff / 2 + rng.uniform(0, backoff / 2)


def _retry_after_s(error: BusError) -> float:
    data = error.data if isinstance(error, CallError) else None
    hint = data.get("retryAfterSeconds") if isinstance(data, dict) else None
    if isinstance(hint, bool) or not isinstance(hint, int | float) or not 0 < hint < math.inf:
        return 0.0
    return float(hint)


async def call_with_retry(
    call: Callable[[], Awaitable[T]],
    *,
    tool_is_safe: bool,
    policy: RetryPolicy,
    rng: random.Random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """``await call()``, again after a wait while :func:`should_retry` says so.

    Raises:
        BusError: the last try's error, when it is not retried.
    """
    attempt, timeouts = 1, 0
    while True:
        try:
            return await call()
        except BusError as exc:
            if not should_retry(
                exc, attempt=attempt, timeouts=timeouts, tool_is_safe=tool_is_safe, policy=policy
            ):
                raise
            timeouts += timed_out(exc)
            delay = retry_delay_s(exc, attempt=attempt, policy=policy, rng=rng)
            logger.debug("try %d failed (%s); again in %.2f s", attempt, exc, delay)
            await sleep(delay)
            attempt += 1
