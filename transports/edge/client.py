"""``EdgeClient``: tool calls from a device whose link to the bus comes and goes.

::

    async with EdgeClient.open("/var/lib/raybus/edge.db", url=URL, token=TOKEN) as edge:
        call = await edge.submit("record_position", {"lat": 54.1})  # durable now
        result = await call.result()          # waits through outages
        async for outcome in edge.unclaimed():  # answers nobody took (after a restart)
            ...
            await outcome.claim()

``submit`` returns once the request is committed to the journal (:mod:`.journal`); the
pump (:mod:`.pump`) sends it whenever the link is up, in submit order, and stores the
answer. A request keeps its ``request_id`` across restarts: ``attach(request_id)`` in a
new process returns its handle. Every request carries an idempotency key
(``<client_id>:<key>``) so that a resend after an unknown outcome runs at most once on a
bus that dedups keyed calls; a request whose fate is still unknown when the resend
horizon passes is failed locally with 1004, never resent.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from pydantic import BaseModel, ConfigDict, Field

from transports.edge.http import HttpLink
from transports.edge.journal import Journal, Row, RowState, Submission
from transports.edge.pump import LinkState, Pump, PumpSettings
from transports.errors import (
    INTERNAL_ERROR,
    BusErrorCode,
    BusTimeout,
    CallError,
    ConnectionClosed,
)
from transports.labels import checked_labels

__all__ = ["EdgeCall", "EdgeClient", "EdgeSettings", "LinkStatus", "Outcome"]

logger = logging.getLogger(__name__)

# The key on the wire is "<32 hex client id>:<key>"; the bus accepts at most 200 chars.
_KEY: Final = re.compile(r"[\x21-\x7e]{1,160}")
_PRUNE_EVERY_S: Final = 3600.0


class EdgeSettings(BaseModel):
    """How the edge client sends; every field has a default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_in_flight: int = Field(16, ge=1, le=1024)
    call_timeout_s: float = Field(300.0, gt=0)  # one attempt's HTTP deadline
    connect_timeout_s: float = Field(10.0, gt=0)
    resend_horizon_s: float = Field(3600.0, gt=0)  # capped by the bus's ttlS - 300
    queue_ttl_s: float | None = Field(None, gt=0)  # a queued row older than this fails 1001
    max_rows: int = Field(1_000_000, ge=1)  # unanswered rows before JournalFull
    keep_s: float = Field(7 * 86400.0, ge=0)  # claimed rows are pruned after this
    close_timeout_s: float = Field(10.0, ge=0)
    backoff_first_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    # An answer longer than this fails its call (INTERNAL_ERROR) rather than be stored.
    max_answer_bytes: int = Field(16 * 1024 * 1024, ge=1024)


@dataclass(frozen=True)
class LinkStatus:
    state: LinkState
    unanswered: int  # rows queued or sending
    in_flight: int  # POSTs outstanding now


@dataclass(frozen=True)
class Outcome:
    """A final request: its JSON-RPC ``result`` or its ``error`` (one is None)."""

    request_id: str
    result: dict[str, Any] | None
    error: CallError | None
    _claim: Callable[[str], Awaitable[None]]

    async def claim(self) -> None:
        """Mark it taken: it leaves :meth:`EdgeClient.unclaimed` and may be pruned."""
        await self._claim(self.request_id)


def _outcome(row: Row, claim: Callable[[str], Awaitable[None]]) -> Outcome:
    if row.state == RowState.ANSWERED and row.response is not None:
        error = row.response.get("error")
        if isinstance(error, dict):
            failure = CallError(
                "tools/call",
                int(error.get("code", INTERNAL_ERROR)),
                str(error.get("message", "")),
                error.get("data"),
            )
            return Outcome(row.request_id, None, failure, claim)
        result = row.response.get("result")
        return Outcome(row.request_id, result if isinstance(result, dict) else {}, None, claim)
    if row.state == RowState.CANCELLED:
        failure = CallError("tools/call", BusErrorCode.CANCELLED, "cancelled before it was sent")
        return Outcome(row.request_id, None, failure, claim)
    code = row.error_code if row.error_code is not None else INTERNAL_ERROR
    failure = CallError("tools/call", code, row.error_message or "")
    return Outcome(row.request_id, None, failure, claim)


class EdgeCall:
    """A journaled request; ``request_id`` may be stored and re-attached after a restart."""

    def __init__(self, client: EdgeClient, request_id: str) -> None:
        self._client = client
        self.request_id = request_id

    async def outcome(self, timeout_s: float | None = None) -> Outcome:
        """Wait (through outages) until the request is final.

        Raises:
            BusTimeout: ``timeout_s`` passed first (the request stays journaled).
        """
        return await self._client._wait_final(self.request_id, timeout_s)

    async def result(self, timeout_s: float | None = None) -> dict[str, Any]:
        """The tool's result, once answered; the outcome is claimed.

        Raises:
            CallError: the call ended with a JSON-RPC error, or failed locally (1001
                expired before it was sent, 1004 past the resend horizon, 1005 cancelled).
            BusTimeout: ``timeout_s`` passed first (the request stays journaled).
        """
        outcome = await self.outcome(timeout_s)
        await outcome.claim()
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None  # an outcome holds one of the two
        return outcome.result

    async def cancel(self) -> bool:
        """Cancel it if it has not left yet; False when it may have (it may run)."""
        cancelled = await self._client._journal.cancel(self.request_id)
        if cancelled:
            self._client._finished(self.request_id)
        return cancelled


class _Opening:
    """``EdgeClient.open(...)``: await it, or use it as ``async with``."""

    def __init__(self, opener: Callable[[], Awaitable[EdgeClient]]) -> None:
        self._opener = opener
        self._client: EdgeClient | None = None

    def __await__(self) -> Generator[Any, None, EdgeClient]:
        return self._opener().__await__()

    async def __aenter__(self) -> EdgeClient:
        self._client = await self._opener()
        return self._client

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.close()


class EdgeClient:
    """Journaled tool calls over a link that may be down; module docstring."""

    def __init__(
        self, journal: Journal, link: HttpLink, labels: dict[str, str], settings: EdgeSettings
    ) -> None:
        self._journal = journal
        self._link = link
        self._labels = labels
        self._settings = settings
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._any_final = asyncio.Event()
        pump_settings = PumpSettings(
            max_in_flight=settings.max_in_flight,
            resend_horizon_s=settings.resend_horizon_s,
            backoff_first_s=settings.backoff_first_s,
            backoff_max_s=settings.backoff_max_s,
        )
        self._pump = Pump(journal, link, pump_settings, self._finished)
        self._pruner: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        url: str,
        token: str | None = None,
        labels: Mapping[str, str] | None = None,
        settings: EdgeSettings | None = None,
    ) -> _Opening:
        """Open the journal at ``path`` (created on first use) and start sending.

        Raises:
            ValueError: a label breaks the label grammar.
            JournalError: the journal cannot be used.
        """
        chosen = settings or EdgeSettings()
        checked = checked_labels(labels)

        async def opener() -> EdgeClient:
            journal = await Journal.open(path, max_rows=chosen.max_rows)
            link = HttpLink(
                url,
                token=token,
                call_timeout_s=chosen.call_timeout_s,
                connect_timeout_s=chosen.connect_timeout_s,
                max_connections=chosen.max_in_flight + 2,
                max_answer_bytes=chosen.max_answer_bytes,
            )
            client = cls(journal, link, checked, chosen)
            try:
                await client._start()
            except BaseException:
                await client.close()
                raise
            return client

        return _Opening(opener)

    async def _start(self) -> None:
        await self._pump.start()
        self._pruner = asyncio.create_task(self._prune(), name="edge-prune")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def client_id(self) -> str:
        return self._journal.client_id

    @property
    def link(self) -> LinkStatus:
        return LinkStatus(self._pump.state, self._journal.unanswered, self._pump.in_flight)

    async def wait_for_link(self, state: LinkState) -> None:
        """Return once the link is in ``state`` (bound the wait with ``asyncio.timeout``)."""
        await self._pump.wait_for(state)

    async def submit(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> EdgeCall:
        """Journal a ``tools/call``; returns once it is durable (before it is sent).

        Raises:
            ValueError: a bad ``idempotency_key`` (1-160 printable ASCII, unused in this
                journal) or label.
            JournalFull: ``max_rows`` requests are unanswered (nothing was journaled).
            ConnectionClosed: the client was closed.
        """
        if self._closed:
            raise ConnectionClosed("the edge client is closed")
        if idempotency_key is not None and not _KEY.fullmatch(idempotency_key):
            raise ValueError("idempotency_key: must be 1-160 printable ASCII characters")
        merged = {**self._labels, **checked_labels(labels)}
        expires = None
        if self._settings.queue_ttl_s is not None:
            expires = self._journal.now() + self._settings.queue_ttl_s
        submission = Submission(name, dict(arguments or {}), merged, idempotency_key, expires)
        request_id = await self._journal.enqueue(submission)
        self._pump.wake()
        return EdgeCall(self, request_id)

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        idempotency_key: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """:meth:`submit` then :meth:`EdgeCall.result`."""
        call = await self.submit(name, arguments, idempotency_key=idempotency_key, labels=labels)
        return await call.result(timeout_s)

    async def attach(self, request_id: str) -> EdgeCall:
        """The handle of a request journaled earlier (by this or a previous process).

        Raises:
            KeyError: no such request in this journal (never submitted, or pruned).
        """
        if await self._journal.get(request_id) is None:
            raise KeyError(f"request {request_id!r} is not in the edge journal")
        return EdgeCall(self, request_id)

    async def unclaimed(self, *, follow: bool = False) -> AsyncIterator[Outcome]:
        """Final outcomes nobody claimed, in submit order.

        With ``follow`` it waits for more as they arrive and never ends by itself.
        """
        yielded: set[str] = set()
        while True:
            # Captured before the scan: an outcome that lands during it wakes the wait.
            seen = self._any_final
            after, fresh = 0, False
            while rows := await self._journal.unclaimed(after, 100):
                for row in rows:
                    after = row.seq
                    if row.request_id not in yielded:
                        yielded.add(row.request_id)
                        fresh = True
                        yield _outcome(row, self._journal.claim)
            if not follow:
                return
            if not fresh:  # answers land out of seq order: only a full scan says "none"
                await seen.wait()

    async def close(self) -> None:
        """Wait up to ``close_timeout_s`` for POSTs in flight, then close the journal."""
        if self._closed:
            return
        self._closed = True
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
        await self._pump.close(self._settings.close_timeout_s)
        await self._link.close()
        await self._journal.close()
        for waiter in self._waiters.values():
            waiter.cancel()

    # -- internals -----------------------------------------------------------------

    def _finished(self, request_id: str) -> None:
        waiter = self._waiters.pop(request_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        fired, self._any_final = self._any_final, asyncio.Event()
        fired.set()

    async def _wait_final(self, request_id: str, timeout_s: float | None) -> Outcome:
        waiter = self._waiters.get(request_id)
        if waiter is None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[request_id] = waiter
        row = await self._journal.get(request_id)
        if row is None:
            raise KeyError(f"request {request_id!r} is not in the edge journal")
        if row.state.final:
            if not waiter.done():
                self._waiters.pop(request_id, None)
        else:
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(waiter)
            except TimeoutError:
                raise BusTimeout(f"edge call {request_id}", timeout_s or 0.0) from None
            row = await self._journal.get(request_id)
            assert row is not None  # rows are never deleted before they are claimed
        return _outcome(row, self._journal.claim)

    async def _prune(self) -> None:
        while True:
            try:
                pruned = await self._journal.prune(self._settings.keep_s)
            except Exception:  # a top-level loop: the next round tries again
                logger.exception("edge journal prune failed")
            else:
                logger.debug("edge journal pruned %d claimed rows", pruned)
            await asyncio.sleep(_PRUNE_EVERY_S)
