"""A worker's consumer for a broker backend (Kafka, SQS): the same rules for both.

Requests come from the pool's topic or queue, at most ``capacity`` at once. Each one's
key is checked in the pool-wide ledger first: a finished call is answered again from the
stored response, a call another worker is running is waited for, and only a new one
runs. A call that may run twice (a read, a tool annotated read-only or idempotent)
skips the ledger: its redelivered copy runs again. Its response is published (after any
progress it sent) before the delivery is acknowledged, so a crash at any point
redelivers rather than loses it.

No router sees these calls, so the source counts how each one ended (the worker's
metrics, :meth:`BrokerWorkerSource.calls_ended`): a call it ran, timed from starting it
(past the ledger's check) to publishing its answer, and a call reported lost. A redelivered copy
answered from the ledger is not counted again, nor is a call left to be redelivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from actors.coalesce import Coalescer
from actors.ledger import DecisionKind
from actors.router.outcomes import CallOutcome, CallTally, call_label
from actors.router.regions import RegionRefusal
from actors.router.routing import repeat_safe
from actors.worker.admission import ADMIT_ALL, Admission
from actors.worker.core import completion_of
from actors.worker.hosted_server import HostedServer
from actors.worker.keyed import KeyedLedgerPort, KeyedRuns
from cluster.backends.broker import ReceiveRetry, request_key
from cluster.idempotency import LOST_MARGIN_S, RayLedgerPort
from transports.base import Delivery
from transports.codec import encode_message
from transports.envelope import CorrelationKey, Envelope
from transports.errors import (
    BusError,
    BusErrorCode,
    ConnectionClosed,
    InvalidMessage,
    MessageTooLarge,
)
from transports.frame import Frame
from transports.message import Request, Response

__all__ = ["BrokerWorkerSource", "one_at_a_time"]

logger = logging.getLogger(__name__)

_LOST = "lost"
# What a worker answers (to nobody listening) for a call cancelled before it arrived.
_WITHDRAWN = (BusErrorCode.CANCELLED, "cancelled before a worker took it")
# Cancelled keys a worker remembers for repeatable calls still in the broker; the oldest
# go first. A call arriving after its key was forgotten, or at a worker that joined after
# the cancel, runs: it is a read-only or idempotent call whose caller has gone.
_WITHDRAWN_REMEMBERED = 65_536

# Queues one message for a destination in order and returns once it is queued; the
# awaitable it returns completes when the broker has the message (or raises why not).
Publish = Callable[[str, bytes, Envelope], Awaitable[Awaitable[None]]]


def one_at_a_time(send: Callable[[str, bytes, Envelope], Awaitable[None]]) -> Publish:
    """A :data:`Publish` for a broker that confirms each send as it returns (SQS)."""

    async def publish(destination: str, body: bytes, envelope: Envelope) -> Awaitable[None]:
        await send(destination, body, envelope)
        return asyncio.sleep(0)  # already confirmed

    return publish


class _Receiver(Protocol):
    async def start(self) -> object: ...

    async def receive(self) -> Delivery: ...

    def is_connected(self) -> bool: ...

    async def close(self) -> None: ...


def _failure(message: Any, code: int, text: str) -> bytes:
    """The encoded error answer to ``message`` (a request, else answered without an id)."""
    request_id = message.id if isinstance(message, Request) else None
    return encode_message(Response.failure(request_id, code, text))


def _tool_of(envelope: Envelope) -> str:
    return call_label(envelope.method, envelope.name)


class BrokerWorkerSource:
    def __init__(
        self,
        receiver: _Receiver,
        publish: Publish,
        hosted: HostedServer,
        ledger: Any,
        *,
        pool: str,
        capacity: int,
        call_timeout_s: float,
        duplicate_wait_s: float,
        admission: Admission = ADMIT_ALL,
    ) -> None:
        self._receiver = receiver
        self._admission = admission
        self._pool = pool
        self._tally = CallTally()
        self._publish_now = publish
        self._hosted = hosted
        self._ledger = ledger
        # Two ledger calls per request, each batched with the worker's other requests.
        self._begin: Coalescer[str, tuple[str, bytes | None]] = Coalescer(self._begin_many)
        self._complete: Coalescer[tuple[str, bytes], None] = Coalescer(self._complete_many)
        self._slots = asyncio.Semaphore(capacity)
        self._call_timeout_s = call_timeout_s
        self._duplicate_wait_s = duplicate_wait_s
        # Keyed requests are decided by their idempotency key (actors.worker.keyed).
        port = RayLedgerPort(ledger)

        async def keyed_ledger() -> KeyedLedgerPort:
            return port

        lost_after_s = call_timeout_s + LOST_MARGIN_S  # no run lasts longer
        self._keyed = KeyedRuns(keyed_ledger, duplicate_wait_s, lost_after_s)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._outbound: asyncio.Queue[tuple[str, bytes, Envelope, asyncio.Future[None]]] = (
            asyncio.Queue()
        )
        self._sender: asyncio.Task[None] | None = None
        self._confirming: set[asyncio.Task[None]] = set()
        self._withdrawn: OrderedDict[str, None] = OrderedDict()

    async def start(self) -> None:
        """Connect the receiver, then start taking requests."""
        await self._receiver.start()
        loop = asyncio.get_running_loop()
        self._sender = loop.create_task(self._send_in_order())
        self._runner = loop.create_task(self._run())

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def calls_ended(self) -> CallTally:
        """The calls that ended since the last time asked (one tally, handed over)."""
        tally, self._tally = self._tally, CallTally()
        return tally

    def withdraw(self, keys: list[CorrelationKey]) -> None:
        """Cancelled calls: a repeatable one (which never asks the ledger, where the
        client withdrew it) that arrives later is answered "cancelled", not run."""
        for key in keys:
            self._withdrawn[request_key(key)] = None
        while len(self._withdrawn) > _WITHDRAWN_REMEMBERED:
            self._withdrawn.popitem(last=False)

    def emit(self, destination: str, frame: Frame) -> None:
        """What the hosted server sends about a call (progress, logs): to the caller."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbound.put_nowait((destination, frame.body, frame.envelope, future))

    async def _publish(self, destination: str, body: bytes, envelope: Envelope) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outbound.put_nowait((destination, body, envelope, future))
        await future

    async def _send_in_order(self) -> None:
        # One sender queues every message in order, so a call's progress always reaches
        # its caller before its response; the broker's confirmations are awaited beside
        # it, many at once (one at a time was a broker round trip per answer).
        while True:
            destination, body, envelope, done = await self._outbound.get()
            try:
                confirmed = await self._publish_now(destination, body, envelope)
            except Exception as exc:  # noqa: BLE001 - its call hears it; the sender goes on
                self._published(destination, done, exc)
                continue
            confirming = self._confirm(destination, confirmed, done)
            task = asyncio.get_running_loop().create_task(confirming)
            self._confirming.add(task)
            task.add_done_callback(self._confirming.discard)

    async def _confirm(
        self, destination: str, confirmed: Awaitable[None], done: asyncio.Future[None]
    ) -> None:
        try:
            await confirmed
        except Exception as exc:  # noqa: BLE001 - whatever it is, its call must hear it
            self._published(destination, done, exc)
        else:
            self._published(destination, done, None)

    @staticmethod
    def _published(
        destination: str, done: asyncio.Future[None], error: BaseException | None
    ) -> None:
        if error is not None:
            logger.warning("could not publish to %s: %s", destination, error)
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    async def _run(self) -> None:
        retry = ReceiveRetry("pool requests")
        while True:
            await self._slots.acquire()
            try:
                delivery = await self._receiver.receive()
            except (InvalidMessage, MessageTooLarge) as exc:
                self._slots.release()
                # The transport has already disposed of it (answered, dead-lettered, or
                # for a message that does not open, dropped): nothing is left to do here.
                logger.warning("an undecodable request was refused: %s", exc)
                continue
            except ConnectionClosed as exc:
                self._slots.release()
                if not self._receiver.is_connected():
                    return  # closed here: the source stops
                await retry.failed(exc)  # the broker went away: it may come back
                continue
            except BusError as exc:  # a broker timeout or refusal: never end in silence
                self._slots.release()
                await retry.failed(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - top of a loop whose end would be silent
                self._slots.release()
                await retry.crashed(exc)
                continue
            retry.succeeded()
            task = asyncio.get_running_loop().create_task(self._handle(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle(self, delivery: Delivery) -> None:
        envelope = delivery.envelope or Envelope()  # without routing data nobody can be answered
        key = request_key(envelope.correlation_key)
        holds_slot = True
        try:
            refusal, expired = self._admission.refuse(envelope), envelope.expired()
            if refusal is not None or expired:
                # Never handed to the server, so its slot frees now: a backlog of expired
                # requests is answered as fast as it is received, not a slot's turn each.
                self._slots.release()
                holds_slot = False
            if refusal is not None:
                # Before the ledger: a request refused here claims no key (README "Regions").
                await self._refuse(delivery.message, envelope, refusal)
                await delivery.ack()
                return
            if expired:
                # Its caller has given up: answer at once, never hand it to the server.
                await self._expired(delivery.message, envelope)
                await delivery.ack()
                return
            if envelope.idempotency_key is not None:
                await self._run_keyed(delivery.message, envelope, key)
                await delivery.ack()
                return
            if self._repeatable(delivery.message):
                # A read or a read-only/idempotent tool may run twice, so it skips the
                # ledger's two round trips: a redelivered copy runs again and its
                # answer is one the caller drops as a repeat. A call its caller withdrew
                # is known here from the cancel every worker of the pool was sent.
                if key in self._withdrawn:
                    await self._reply(envelope, _failure(delivery.message, *_WITHDRAWN))
                else:
                    await self._run_call(delivery.message, envelope, key, ledgered=False)
                await delivery.ack()
                return
            kind, stored = await self._begin(key)
            if kind == DecisionKind.IN_PROGRESS.value:
                kind, stored = await self._await_other_run(key)
            if kind == DecisionKind.DONE.value and stored is not None:
                await self._reply(envelope, stored)  # ran before: answer again, never rerun
            elif kind == DecisionKind.NEW.value and key in self._withdrawn:
                # Cancelled here while the ledger decided (its withdraw came too late
                # there): stored as its outcome, so no copy of it ever runs either.
                body = _failure(delivery.message, *_WITHDRAWN)
                await self._complete((key, body))
                await self._reply(envelope, body)
                self._tally.add(self._pool, _tool_of(envelope), CallOutcome.CANCELLED)
            elif kind == DecisionKind.NEW.value:
                await self._run_call(delivery.message, envelope, key)
            else:
                body = _failure(
                    delivery.message,
                    BusErrorCode.OUTCOME_UNKNOWN,
                    "the worker running this call was lost; it may have run",
                )
                await self._complete((key, body))  # later copies: the same answer
                await self._reply(envelope, body)
                self._tally.add(self._pool, _tool_of(envelope), CallOutcome.LOST)
            await delivery.ack()
        except Exception:  # top of one call: it stays unacknowledged and is redelivered
            logger.exception("request %s failed in the broker source", envelope.request_id)
            await delivery.nack()
        finally:
            if holds_slot:
                self._slots.release()

    def _repeatable(self, message: Any) -> bool:
        # Judged by the request the server will run, not by its envelope's labels.
        if not isinstance(message, Request):
            return False
        name = message.params.get("name") if isinstance(message.params, dict) else None
        return repeat_safe(
            self._hosted.catalog, message.method, name if isinstance(name, str) else ""
        )

    async def _refuse(self, message: Any, envelope: Envelope, refusal: RegionRefusal) -> None:
        request_id = message.id if isinstance(message, Request) else None
        answer = Response.failure(request_id, refusal.code, refusal.message, refusal.data())
        await self._reply(envelope, encode_message(answer))
        self._tally.add(self._pool, _tool_of(envelope), CallOutcome.ERROR)

    async def _expired(self, message: Any, envelope: Envelope) -> None:
        body = _failure(
            message, BusErrorCode.DEADLINE_EXCEEDED, "deadline passed before a worker took it"
        )
        await self._reply(envelope, body)
        self._tally.add(self._pool, _tool_of(envelope), CallOutcome.TIMEOUT)

    def _timeout_for(self, envelope: Envelope) -> float:
        remaining = envelope.remaining_s()
        if remaining is None:
            return self._call_timeout_s
        return max(0.0, min(remaining, self._call_timeout_s))

    async def _run_keyed(self, message: Any, envelope: Envelope, alias: str) -> None:
        # The key, not the correlation key, decides; the correlation key rides along as
        # the alias a cancelling client withdraws (README "Idempotency keys").
        started = time.monotonic()
        frame = Frame.of(envelope, message)

        async def serve() -> Response | None:
            return await self._hosted.call(frame, self._timeout_for(envelope))

        outcome = await self._keyed.run(frame, serve, alias)
        tool = _tool_of(envelope)
        if outcome.response is None:
            self._tally.add(self._pool, tool, CallOutcome.CANCELLED)
            return
        await self._reply(envelope, encode_message(outcome.response))
        if outcome.ran:  # an answer from the ledger is not counted again
            took_s = time.monotonic() - started
            ended = completion_of(envelope.correlation_key, outcome.response, took_s)
            self._tally.add(self._pool, tool, ended.outcome)
            self._tally.latency(self._pool, took_s)

    async def _run_call(
        self, message: Any, envelope: Envelope, key: str, *, ledgered: bool = True
    ) -> None:
        started = time.monotonic()
        response = await self._hosted.call(Frame.of(envelope, message), self._timeout_for(envelope))
        tool = _tool_of(envelope)
        if response is None:
            if ledgered:
                await self._ledger.abandon.remote(key)
            self._tally.add(self._pool, tool, CallOutcome.CANCELLED)
            return
        body = encode_message(response)
        if ledgered:
            await self._complete((key, body))  # before the reply: a crash now resends
        await self._reply(envelope, body)
        took_s = time.monotonic() - started
        ended = completion_of(envelope.correlation_key, response, took_s)
        self._tally.add(self._pool, tool, ended.outcome)
        self._tally.latency(self._pool, took_s)

    async def _begin_many(self, keys: list[str]) -> list[tuple[str, bytes | None]]:
        decisions: list[tuple[str, bytes | None]] = await self._ledger.begin_many.remote(keys)
        return decisions

    async def _complete_many(self, answers: list[tuple[str, bytes]]) -> list[None]:
        done: list[None] = await self._ledger.complete_many.remote(answers)
        return done

    async def _await_other_run(self, key: str) -> tuple[str, bytes | None]:
        # Another worker holds this key (a rebalance moved the partition under it, or it
        # died mid-call): wait for its outcome rather than run the call twice. A run that
        # does not finish in time is reported lost ("may have run"), never repeated.
        try:
            async with asyncio.timeout(self._duplicate_wait_s):
                while True:
                    kind, stored = await self._ledger.peek.remote(key)
                    if kind != DecisionKind.IN_PROGRESS.value:
                        return kind, stored
                    await asyncio.sleep(0.1)  # polling the ledger actor
        except TimeoutError:
            return _LOST, None

    async def _reply(self, envelope: Envelope, body: bytes) -> None:
        if envelope.reply_to is not None:
            await self._publish(envelope.reply_to, body, envelope)

    async def stop(self, timeout_s: float) -> None:
        """Take no more requests, finish the running ones, then close the receiver."""
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        await self._receiver.close()
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
