"""Requests with an idempotency key run at most once, on every backend.

A caller (an edge device, a trigger) that may send a request twice gives it a key; the
gateway scopes it by the authenticated principal (:func:`keyed_ledger_key`), and the
worker asks the bus's ledger before running it (:class:`KeyedRuns`):

- ``NEW``: run it, store the answer under the key, answer.
- ``DONE``: it ran: the stored answer again, with the *current* request's JSON-RPC id.
- ``CONFLICT``: the key is held by a call with other arguments: 1011, nothing runs.
- ``IN_PROGRESS``: another run holds the key: wait for its answer up to
  ``duplicate_wait_s``; if it is still running then, answer 1004 with
  ``data.stage = "running"`` and store nothing (the caller resends later and gets the
  real answer; a stored "lost" would hide it).
- ``LOST``: the key has been in progress longer than any run may last (``lost_after_s``,
  the pool's longest call timeout plus a margin): the worker running it was lost after
  it may have run. Answered 1004 with ``data.stage = "run"`` (final), stored, never rerun.

A run that ends without an answer (cancelled) gives its key back, so a resend runs it.
Unkeyed requests never come here: they pay nothing for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from actors.ledger import DecisionKind
from transports.codec import decode_message, encode_message
from transports.envelope import Envelope
from transports.errors import BusErrorCode
from transports.frame import Frame
from transports.message import Request, Response

__all__ = [
    "KEY_REUSED_MESSAGE",
    "KeyedLedgerPort",
    "KeyedOutcome",
    "KeyedRuns",
    "keyed_ledger_key",
    "request_digest",
    "restamped",
]

logger = logging.getLogger(__name__)

KEY_REUSED_MESSAGE = "idempotency key reused with different arguments"
# How often a keyed duplicate asks the ledger whether the first run has ended.
_POLL_S = 0.1

Decided = tuple[str, bytes | None]


class KeyedLedgerPort(Protocol):
    """The ledger calls a keyed run makes (the Ray actor's methods, awaited)."""

    async def begin_keyed(
        self, key: str, digest: str, alias: str | None, lost_after_s: float | None
    ) -> Decided: ...

    async def complete_keyed(self, key: str, response: bytes, alias: str | None) -> None: ...

    async def abandon_keyed(self, key: str, alias: str | None) -> None: ...


def keyed_ledger_key(envelope: Envelope) -> str:
    """The ledger key of a keyed request: one principal never reaches another's answer.

    Raises:
        ValueError: the envelope carries no idempotency key.
    """
    if envelope.idempotency_key is None:
        raise ValueError("the request carries no idempotency key")
    return f"k\x1f{envelope.principal}\x1f{envelope.idempotency_key}"


def request_digest(envelope: Envelope, message: Any) -> str:
    """SHA-256 of the canonical JSON of method, name and params without ``_meta``.

    ``_meta`` is left out because it changes between resends of the same call (progress
    tokens, trace context) without changing what the call does.
    """
    params = message.params if isinstance(message, Request) else None
    if isinstance(params, dict):
        params = {key: value for key, value in params.items() if key != "_meta"}
    canonical = json.dumps(
        [envelope.method, envelope.name, params],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def restamped(stored: bytes, request_id: Any) -> Response:
    """A stored answer as the answer to the request with JSON-RPC id ``request_id``."""
    answer = decode_message(stored)
    if not isinstance(answer, Response):  # the ledger stores responses only
        raise ValueError("the stored answer is not a response")
    return answer.model_copy(update={"id": request_id})


@dataclass(frozen=True, slots=True)
class KeyedOutcome:
    """How a keyed request ended: its answer (None: cancelled) and whether it ran here."""

    response: Response | None
    ran: bool


class KeyedRuns:
    """Runs keyed requests through a ledger port; the module docstring has the rules.

    Args:
        ledger: a callable returning the ledger port (awaited once per keyed request: on
            Ray the actor is looked up, or started, only when a keyed call comes).
        duplicate_wait_s: how long a duplicate waits for the run holding its key.
        lost_after_s: a key in progress longer than this lost its run (None: never).
    """

    def __init__(
        self,
        ledger: Callable[[], Awaitable[KeyedLedgerPort]],
        duplicate_wait_s: float,
        lost_after_s: float | None = None,
    ) -> None:
        self._ledger = ledger
        self._duplicate_wait_s = duplicate_wait_s
        self._lost_after_s = lost_after_s

    async def run(
        self,
        frame: Frame,
        serve: Callable[[], Awaitable[Response | None]],
        alias: str | None = None,
    ) -> KeyedOutcome:
        """Answer a keyed request: from the ledger, or by ``serve()`` (at most once).

        ``alias`` is the request's correlation key in the ledger, where a broker client
        withdraws a call it cancelled.
        """
        envelope = frame.envelope
        key = keyed_ledger_key(envelope)
        message = frame.decode()
        request_id = message.id if isinstance(message, Request) else None
        digest = request_digest(envelope, message)
        ledger = await self._ledger()
        kind, stored = await self._decide(ledger, key, digest, alias)
        if kind == DecisionKind.CONFLICT.value:
            failure = Response.failure(
                request_id, BusErrorCode.IDEMPOTENCY_KEY_REUSED, KEY_REUSED_MESSAGE
            )
            return KeyedOutcome(failure, ran=False)
        if kind == DecisionKind.DONE.value and stored is not None:
            return KeyedOutcome(restamped(stored, request_id), ran=False)
        if kind == DecisionKind.LOST.value:
            text = "the worker running this call was lost; it may have run"
            lost = Response.failure(
                request_id, BusErrorCode.OUTCOME_UNKNOWN, text, {"stage": "run"}
            )
            await ledger.complete_keyed(key, encode_message(lost), alias)  # final: kept
            return KeyedOutcome(lost, ran=False)
        if kind != DecisionKind.NEW.value:  # still running elsewhere: resend later
            text = "a call with this idempotency key is still running; send it again later"
            data = {"stage": "running"}
            failure = Response.failure(request_id, BusErrorCode.OUTCOME_UNKNOWN, text, data)
            return KeyedOutcome(failure, ran=False)
        try:
            response = await serve()
        except BaseException:
            await asyncio.shield(ledger.abandon_keyed(key, alias))
            raise
        if response is None:
            await ledger.abandon_keyed(key, alias)
            return KeyedOutcome(None, ran=True)
        # Stored before it is sent: a crash after this answers the resend from the ledger.
        await ledger.complete_keyed(key, encode_message(response), alias)
        return KeyedOutcome(response, ran=True)

    async def _decide(
        self, ledger: KeyedLedgerPort, key: str, digest: str, alias: str | None
    ) -> Decided:
        kind, stored = await ledger.begin_keyed(key, digest, alias, self._lost_after_s)
        if kind != DecisionKind.IN_PROGRESS.value:
            return kind, stored
        # Another run holds the key: its answer is waited for, never run twice. Asking
        # begin again also claims the key if that run gave it back (cancelled).
        try:
            async with asyncio.timeout(self._duplicate_wait_s):
                while kind == DecisionKind.IN_PROGRESS.value:
                    await asyncio.sleep(_POLL_S)  # polling the ledger actor
                    kind, stored = await ledger.begin_keyed(key, digest, alias, self._lost_after_s)
        except TimeoutError:
            logger.debug("keyed duplicate %s still running after the wait", key)
        return kind, stored
