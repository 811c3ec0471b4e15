"""The edge client's sender: journal rows out over the link, answers back into the journal.

Rows leave in ``seq`` order, at most ``max_in_flight`` POSTs outstanding (dispatch is in
order; ``max_in_flight=1`` makes execution on the bus one-after-another too). Each
attempt is committed as ``sending`` before its POST (:meth:`Journal.mark_sending`), and
its outcome decides the row:

* a JSON-RPC answer -> ``answered`` (stored verbatim), except the transient set below;
* transient answers - 1002 overloaded, 1003 circuit open, 1006 shutting down, 1008 rate
  limited, 1004 unless ``data.stage`` is ``"run"`` (may have run, or the first run of
  the key still goes: the resend is answered by the bus's ledger), 1001 with
  ``data.stage`` ``"queue"`` (no worker took it): the row stays ``sending`` and the pump
  pauses with backoff, then resends it with the same key. The ledger's "lost" (1004,
  ``stage: "run"``) is final;
* not sent (no connection) -> ``queued`` again unless an earlier attempt may have left,
  link ``DOWN``; maybe sent (reset, timeout, 5xx) -> stays ``sending``, link ``DOWN``;
* 401/403 -> link ``AUTH_FAILED``, rows untouched; 400-class rejections -> ``failed``.

While the link is not ``UP`` a prober POSTs ``server/discover`` with the backoff (0.5 s
doubling to 30 s, jittered, reset by the first answered call). Its answer brings the
link up, and the advertised ``io.raybus/idempotency`` ``ttlS`` shortens the resend
horizon to ``ttlS - 300`` s; the pump restarts from the lowest unfinished ``seq``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from transports.edge.http import (
    IDEMPOTENCY_EXTENSION,
    AnswerTooLarge,
    AuthRefused,
    HttpLink,
    LinkFailure,
    MaybeSent,
    NotSent,
    Rejected,
)
from transports.edge.journal import Journal, Row, RowState
from transports.errors import INTERNAL_ERROR, INVALID_REQUEST, BusErrorCode

__all__ = ["Backoff", "LinkState", "Pump", "is_transient"]

logger = logging.getLogger(__name__)

# The bus stops resending this long before its advertised key TTL: a resend must reach
# the ledger while it still remembers the key.
HORIZON_MARGIN_S: Final = 300.0
_TRANSIENT_CODES: Final = frozenset(
    {
        BusErrorCode.OVERLOADED,
        BusErrorCode.CIRCUIT_OPEN,
        BusErrorCode.SHUTTING_DOWN,
        BusErrorCode.RATE_LIMITED,
    }
)
_EXPIRY_CHECK_S: Final = 5.0
_FETCH: Final = 64


class LinkState(StrEnum):
    UP = "up"
    DOWN = "down"
    AUTH_FAILED = "auth_failed"


def is_transient(response: dict[str, Any]) -> bool:
    """Is this JSON-RPC answer a "not now" the row should be resent after?"""
    error = response.get("error")
    if not isinstance(error, dict):
        return False
    code = error.get("code")
    data = error.get("data")
    stage = data.get("stage") if isinstance(data, dict) else None
    if code in _TRANSIENT_CODES:
        return True
    if code == BusErrorCode.OUTCOME_UNKNOWN:
        # "May have run" (a worker, router or broker confirmation lost): every call the
        # edge sends carries an idempotency key, so a resend is answered by the bus's
        # ledger - the stored answer, "running" (later), or "run" (lost: final).
        return stage != "run"
    return code == BusErrorCode.DEADLINE_EXCEEDED and stage == "queue"


class Backoff:
    """0.5 s doubling to 30 s, each delay jittered to 50-100 % of its value."""

    def __init__(self, first_s: float = 0.5, max_s: float = 30.0) -> None:
        self._first_s = first_s
        self._max_s = max_s
        self._next_s = first_s

    def next_delay(self) -> float:
        delay = self._next_s
        self._next_s = min(self._max_s, self._next_s * 2)
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self._next_s = self._first_s


@dataclass(frozen=True)
class PumpSettings:
    max_in_flight: int
    resend_horizon_s: float
    backoff_first_s: float
    backoff_max_s: float


class Pump:
    """Sends the journal's rows; calls ``on_final(request_id)`` when a row becomes final."""

    def __init__(
        self,
        journal: Journal,
        link: HttpLink,
        settings: PumpSettings,
        on_final: Callable[[str], None],
    ) -> None:
        self._journal = journal
        self._link = link
        self._settings = settings
        self._on_final = on_final
        self._state = LinkState.DOWN
        self._changed = asyncio.Event()
        self._up = asyncio.Event()
        self._work = asyncio.Event()
        self._backoff = Backoff(settings.backoff_first_s, settings.backoff_max_s)
        self._slots = asyncio.Semaphore(settings.max_in_flight)
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._rewind = False
        self._holding: asyncio.Task[None] | None = None
        self._horizon_s = settings.resend_horizon_s
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def wait_for(self, state: LinkState) -> None:
        """Return once the link is in ``state`` (callers bound the wait)."""
        while self._state != state:
            changed = self._changed
            await changed.wait()

    async def start(self) -> None:
        ttl = await self._journal.meta("bus_idempotency_ttl_s")
        if ttl is not None:
            self._apply_ttl(float(ttl))
        await self._expire()
        self._tasks = [
            asyncio.create_task(self._dispatch(), name="edge-dispatch"),
            asyncio.create_task(self._probe(), name="edge-probe"),
            asyncio.create_task(self._expiry(), name="edge-expiry"),
        ]
        for task in self._tasks:
            task.add_done_callback(_log_death)

    def wake(self) -> None:
        """New rows were journaled."""
        self._work.set()

    async def close(self, timeout_s: float) -> None:
        """Stop dispatching; wait up to ``timeout_s`` for POSTs in flight, then cancel."""
        stopping = [*self._tasks, *([self._holding] if self._holding else [])]
        for task in stopping:
            task.cancel()
        await asyncio.gather(*stopping, return_exceptions=True)
        pending = list(self._in_flight.values())
        if pending:
            _, late = await asyncio.wait(pending, timeout=timeout_s)
            for task in late:
                task.cancel()  # rows stay 'sending': resent with their key next time
            await asyncio.gather(*pending, return_exceptions=True)

    # -- link state ----------------------------------------------------------------

    def _set_state(self, state: LinkState) -> None:
        if state == self._state:
            return
        logger.info("edge link %s -> %s", self._state, state)
        self._state = state
        if state == LinkState.UP:
            self._up.set()
        else:
            self._up.clear()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _apply_ttl(self, ttl_s: float) -> None:
        self._horizon_s = min(self._settings.resend_horizon_s, ttl_s - HORIZON_MARGIN_S)

    async def _probe(self) -> None:
        while True:
            while self._state == LinkState.UP:
                changed = self._changed
                await changed.wait()
            try:
                result = await self._link.discover()
            except AuthRefused:
                self._set_state(LinkState.AUTH_FAILED)
            except LinkFailure as exc:
                logger.debug("edge probe failed: %s", exc)
            else:
                await self._learn(result)
                self._rewind = True
                self._set_state(LinkState.UP)
                self._work.set()
                continue
            await asyncio.sleep(self._backoff.next_delay())

    async def _learn(self, discovered: dict[str, Any]) -> None:
        extensions = (discovered.get("capabilities") or {}).get("extensions") or {}
        advertised = extensions.get(IDEMPOTENCY_EXTENSION)
        ttl = advertised.get("ttlS") if isinstance(advertised, dict) else None
        if isinstance(ttl, int | float) and not isinstance(ttl, bool):
            self._apply_ttl(float(ttl))
            await self._journal.set_meta("bus_idempotency_ttl_s", repr(float(ttl)))

    # -- sending -------------------------------------------------------------------

    async def _dispatch(self) -> None:
        cursor = 0
        while True:
            await self._up.wait()
            if self._rewind:
                self._rewind, cursor = False, 0
            self._work.clear()
            rows = await self._journal.to_send(cursor, _FETCH)
            if not rows:
                await self._work.wait()
                continue
            for row in rows:
                cursor = row.seq
                if row.request_id in self._in_flight:
                    continue
                await self._slots.acquire()
                if self._state != LinkState.UP or self._rewind:
                    self._slots.release()
                    break
                task = asyncio.create_task(self._attempt(row))
                self._in_flight[row.request_id] = task

    async def _attempt(self, row: Row) -> None:
        was_queued = row.state == RowState.QUEUED
        pause = False
        try:
            sending = await self._journal.mark_sending(row.request_id)
            if sending is None:
                return  # cancelled or expired meanwhile
            key = f"{self._journal.client_id}:{sending.idempotency_key}"
            try:
                response = await self._link.call_tool(
                    row.request_id, row.params, idempotency_key=key, labels=row.labels
                )
            except AuthRefused:
                await self._journal.mark_not_sent(row.request_id, was_queued=was_queued)
                self._set_state(LinkState.AUTH_FAILED)
            except NotSent as exc:
                await self._journal.mark_not_sent(row.request_id, was_queued=was_queued)
                self._link_lost(exc)
            except MaybeSent as exc:
                self._link_lost(exc)
            except Rejected as exc:
                code = INTERNAL_ERROR if isinstance(exc, AnswerTooLarge) else INVALID_REQUEST
                if await self._journal.mark_failed(row.request_id, code, str(exc)):
                    self._on_final(row.request_id)
            else:
                if is_transient(response):
                    logger.debug("edge call %s: transient %s", row.request_id, response["error"])
                    pause = True
                elif await self._journal.mark_answered(row.request_id, response):
                    self._backoff.reset()
                    self._on_final(row.request_id)
        finally:
            del self._in_flight[row.request_id]
            self._slots.release()
        if pause:
            self._hold()

    def _link_lost(self, exc: LinkFailure) -> None:
        if self._state == LinkState.UP:
            logger.info("edge link lost: %s", exc)
        self._rewind = True
        self._set_state(LinkState.DOWN)

    def _hold(self) -> None:
        """A transient answer: hold all sending for a backoff delay, then resend."""
        if self._state != LinkState.UP or self._holding is not None:
            return
        self._rewind = True
        self._up.clear()
        self._holding = asyncio.create_task(self._release_after(self._backoff.next_delay()))

    async def _release_after(self, delay_s: float) -> None:
        try:
            await asyncio.sleep(delay_s)
        finally:
            self._holding = None
            if self._state == LinkState.UP:
                self._up.set()
                self._work.set()

    # -- expiry --------------------------------------------------------------------

    async def _expiry(self) -> None:
        while True:
            await asyncio.sleep(_EXPIRY_CHECK_S)
            await self._expire()

    async def _expire(self) -> None:
        for request_id in await self._journal.expire(self._horizon_s):
            self._on_final(request_id)


def _log_death(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("edge %s stopped", task.get_name(), exc_info=task.exception())
