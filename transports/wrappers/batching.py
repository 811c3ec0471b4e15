"""``BatchingTransport``: many messages per inner send, flushed on size or time.

Sending
    ``send`` queues the message and returns once the batch that carries it was handed
    to the inner transport (or raises that batch's error): every sender learns the
    outcome of its own message. A batch leaves when it holds ``max_batch_messages``, when
    the next message would take it past ``max_batch_bytes`` (the inner transport's cap by
    default), or ``linger_s`` after its lane started waiting, whichever comes first; on
    ``close`` at once. A message over the cap is refused at ``send``; a sender cancelled
    before its batch leaves is left out of it.

Lanes and order
    Messages join a batch only with messages the inner transport would route the same
    way: the same envelope ``reply_to`` and correlation key (or, all together, those
    without an envelope), because the batch travels under its first envelope (a Kafka
    record key decides the partition). Each lane sends one batch at a time, in the order
    of ``send`` calls, so per-lane order (the order a broker keeps) is never changed.
    The price: traffic in which every message has a correlation key of its own (a
    stream of distinct requests) is not coalesced; each message waits up to
    ``linger_s`` and travels alone. Batch the streams that share a key or carry no
    envelope (progress and answers of one call, a sender's own notifications), or set
    ``linger_s=0`` where messages rarely share one.

Partial failure
    A batch the inner transport refuses as too large (the size is estimated) is split in
    halves, recursively; any other error fails exactly the messages of that batch, and
    later batches go on.

Wire format
    A batch of two or more travels as the notification ``rpc.raybus.batch`` with params
    ``{"v": 1, "items": [{"m": <the message's JSON text>, "e": <envelope headers or
    null>}, ...]}``; a lone message travels unchanged, so a peer without this wrapper
    reads all unbatched traffic and a batching peer reads both. Bodies travel as text,
    not nested objects, so each is decoded with exactly the checks (size, depth, strict
    JSON-RPC) it would meet alone, and one bad item fails only itself.

Receiving
    A batch is unpacked and its messages are returned one by one. The inner delivery is
    acknowledged once every message of it is acked, or nacked (the whole batch comes
    again: at least once) if any is nacked. An item that does not decode raises its
    error at its turn and counts as acked; a batch frame that does not parse at all is
    acked and its error raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from transports.base import Delivery, Transport
from transports.codec import DEFAULT_MAX_DEPTH, DecodeLimits, decode_message, encode_message
from transports.envelope import CorrelationKey, Envelope
from transports.errors import (
    BusError,
    ConnectionClosed,
    EnvelopeNotSupported,
    InvalidMessage,
    InvalidRequest,
    MessageTooLarge,
)
from transports.message import TransportMessage
from transports.wrappers.delegate import TransportWrapper, extension_message, extension_params

__all__ = ["BatchingTransport"]

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
_Route = tuple[str | None, CorrelationKey] | None

_KIND = "batch"
_VERSION = 1
_FRAME_OVERHEAD = len(encode_message(extension_message(_KIND, _VERSION, items=[])))
DEFAULT_MAX_BATCH_MESSAGES = 64
DEFAULT_LINGER_S = 0.002
DEFAULT_CLOSE_TIMEOUT_S = 30.0


@dataclass(slots=True)
class _Pending:
    message: TransportMessage
    envelope: Envelope | None
    item: dict[str, Any]
    cost: int
    done: asyncio.Future[None]


def _settle(batch: Sequence[_Pending], error: BaseException | None = None) -> None:
    for pending in batch:
        if pending.done.done():
            continue
        if error is None:
            pending.done.set_result(None)
        else:
            pending.done.set_exception(error)


class _Lane:
    """The queue of one route: messages waiting for their batch, in send order."""

    def __init__(self) -> None:
        self.items: deque[_Pending] = deque()
        self.cost = 0
        self.full = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def add(self, pending: _Pending, max_count: int, max_cost: int) -> None:
        self.items.append(pending)
        self.cost += pending.cost
        if len(self.items) >= max_count or self.cost >= max_cost:
            self.full.set()

    def take(self, max_count: int, max_cost: int) -> list[_Pending]:
        batch: list[_Pending] = []
        cost = 0
        while self.items and len(batch) < max_count:
            head = self.items[0]
            if batch and cost + head.cost > max_cost:
                break
            self.items.popleft()
            self.cost -= head.cost
            if not head.done.done():  # a sender cancelled while waiting: leave it out
                batch.append(head)
                cost += head.cost
        if not (len(self.items) >= max_count or self.cost >= max_cost):
            self.full.clear()
        return batch


class _BatchSettlement:
    """Acks or nacks the inner delivery of a batch once all of its messages settled."""

    def __init__(self, delivery: Delivery, count: int) -> None:
        self._delivery = delivery
        self._left = count
        self._nacked = False

    def hooks(self) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
        settled = False

        async def settle(acked: bool) -> None:
            nonlocal settled
            if settled:
                return
            settled = True
            self._left -= 1
            self._nacked = self._nacked or not acked
            if self._left == 0:
                await (self._delivery.nack() if self._nacked else self._delivery.ack())

        async def ack() -> None:
            await settle(True)

        async def nack() -> None:
            await settle(False)

        return ack, nack


_Unpacked = tuple[Delivery | BusError, Callable[[], Awaitable[None]]]


class BatchingTransport(TransportWrapper):
    """Sends messages in batches (see the module docstring for the rules).

    Args:
        inner: the transport that carries the batches.
        max_batch_messages: most messages in one batch.
        max_batch_bytes: most encoded bytes in one batch (the inner cap when None).
        linger_s: the longest a lane waits for more messages before sending a batch.
        max_depth: JSON nesting accepted in a received message.
        close_timeout_s: how long ``close`` waits for queued batches to leave.
        sleep: how to wait for the linger (inject a fake in tests).
    """

    def __init__(
        self,
        inner: Transport,
        *,
        max_batch_messages: int = DEFAULT_MAX_BATCH_MESSAGES,
        max_batch_bytes: int | None = None,
        linger_s: float = DEFAULT_LINGER_S,
        max_depth: int = DEFAULT_MAX_DEPTH,
        close_timeout_s: float = DEFAULT_CLOSE_TIMEOUT_S,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(inner)
        if max_batch_messages < 1:
            raise ValueError("max_batch_messages must be at least 1")
        if linger_s < 0:
            raise ValueError("linger_s must not be negative")
        cap = inner.capabilities.max_message_bytes
        if max_batch_bytes is not None and max_batch_bytes <= _FRAME_OVERHEAD:
            raise ValueError(f"max_batch_bytes must be over {_FRAME_OVERHEAD} (the batch frame)")
        self._limits = DecodeLimits(max_message_bytes=cap, max_depth=max_depth)
        self._max_count = max_batch_messages
        self._max_cost = min(max_batch_bytes or cap, cap) - _FRAME_OVERHEAD
        self._linger_s = linger_s
        self._close_timeout_s = close_timeout_s
        self._sleep = sleep
        self._lanes: dict[_Route, _Lane] = {}
        self._closed = False
        self._inbox: deque[_Unpacked] = deque()
        self._receive_lock = asyncio.Lock()

    def is_connected(self) -> bool:
        return not self._closed and self._inner.is_connected()

    async def send(self, message: TransportMessage, envelope: Envelope | None = None) -> None:
        """Queue ``message`` and wait until its batch was sent.

        Raises:
            ConnectionClosed: this transport is closed (or closed before the batch left).
            MessageTooLarge: the message alone is over the inner cap; nothing was queued.
            EnvelopeNotSupported: an envelope for an inner transport that cannot carry it.
            Anything the inner ``send`` raised for the batch that carried the message.
        """
        if self._closed:
            raise ConnectionClosed("batching transport is closed")
        if envelope is not None and not self.capabilities.carries_envelope:
            raise EnvelopeNotSupported(self.transport_type.value)
        body = encode_message(message)
        if len(body) > self._limits.max_message_bytes:
            raise MessageTooLarge(len(body), self._limits.max_message_bytes)
        item = {"m": body.decode("utf-8"), "e": None if envelope is None else envelope.to_headers()}
        cost = len(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()) + 1
        done = asyncio.get_running_loop().create_future()
        pending = _Pending(message, envelope, item, cost, done)
        route: _Route = None if envelope is None else (envelope.reply_to, envelope.correlation_key)
        lane = self._lanes.get(route)
        if lane is None:
            lane = self._lanes[route] = _Lane()
            lane.task = asyncio.create_task(self._drain(route, lane))
        lane.add(pending, self._max_count, self._max_cost)
        await done

    async def _drain(self, route: _Route, lane: _Lane) -> None:
        # The lane's sending loop. Messages are left in it only when close timed out and
        # cancelled it, or on an error the inner transport should never raise: either
        # way each waiting sender gets an error instead of waiting forever.
        batch: list[_Pending] = []
        stranded: BaseException = ConnectionClosed(
            "batching transport closed before the batch was sent"
        )
        try:
            while lane.items:
                if not lane.full.is_set() and not self._closed:
                    await self._linger(lane)
                batch = lane.take(self._max_count, self._max_cost)
                if batch:
                    await self._send_batch(batch)
        except Exception as exc:
            logger.exception("batching transport: sending a batch failed unexpectedly")
            stranded = exc
        finally:
            _settle(batch, stranded)
            _settle(lane.items, stranded)
            if self._lanes.get(route) is lane:
                del self._lanes[route]

    async def _linger(self, lane: _Lane) -> None:
        full = asyncio.ensure_future(lane.full.wait())
        timer = asyncio.ensure_future(self._sleep(self._linger_s))
        try:
            await asyncio.wait({full, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            full.cancel()
            timer.cancel()

    async def _send_batch(self, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            only = batch[0]
            try:
                await self._inner.send(only.message, only.envelope)
            except BusError as error:
                _settle(batch, error)
            else:
                _settle(batch)
            return
        frame = extension_message(_KIND, _VERSION, items=[pending.item for pending in batch])
        try:
            await self._inner.send(frame, batch[0].envelope)
        except MessageTooLarge:
            half = len(batch) // 2
            await self._send_batch(batch[:half])
            await self._send_batch(batch[half:])
        except BusError as error:
            _settle(batch, error)
        else:
            _settle(batch)

    async def receive(self) -> Delivery:
        """The next message; a batch is unpacked and its messages returned in order.

        Raises:
            ConnectionClosed: this transport is closed (or the inner one's peer is gone).
            InvalidMessage / MessageTooLarge: for one undecodable item or batch frame,
                after which the next ``receive`` returns the next message.
        """
        if self._closed:
            raise ConnectionClosed("batching transport is closed")
        async with self._receive_lock:
            if not self._inbox:
                delivery = await self._inner.receive()
                try:
                    params = extension_params(delivery.message, _KIND, _VERSION)
                    if params is None:
                        return delivery
                    self._unpack(params, delivery)
                except InvalidMessage:
                    await delivery.ack()
                    raise
            outcome, ack = self._inbox.popleft()
            if isinstance(outcome, BusError):
                await ack()
                raise outcome
            return outcome

    def _unpack(self, params: dict[str, Any], delivery: Delivery) -> None:
        items = params.get("items")
        if not isinstance(items, list) or not items:
            raise InvalidRequest("rpc.raybus.batch: params.items must be a non-empty array")
        settlement = _BatchSettlement(delivery, len(items))
        for index, item in enumerate(items):
            ack, nack = settlement.hooks()
            try:
                self._inbox.append((self._item_delivery(index, item, ack, nack), ack))
            except (InvalidMessage, MessageTooLarge) as error:
                self._inbox.append((error, ack))

    def _item_delivery(
        self,
        index: int,
        item: Any,
        ack: Callable[[], Awaitable[None]],
        nack: Callable[[], Awaitable[None]],
    ) -> Delivery:
        where = f"rpc.raybus.batch: items[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("m"), str):
            raise InvalidRequest(f"{where} must be an object with a string m")
        headers = item.get("e")
        envelope: Envelope | None = None
        if headers is not None:
            if not isinstance(headers, dict) or not all(
                isinstance(value, str) for value in headers.values()
            ):
                raise InvalidRequest(f"{where}.e must be an object of strings or null")
            envelope = Envelope.from_headers(headers)
        text: str = item["m"]
        message = decode_message(text, self._limits)
        return Delivery(message, envelope, len(text.encode("utf-8")), ack, nack)

    async def close(self) -> None:
        """Send what is queued (within ``close_timeout_s``), then close the inner one."""
        if self._closed:
            return
        self._closed = True
        tasks = []
        for lane in list(self._lanes.values()):
            lane.full.set()  # stop lingering: send now
            if lane.task is not None:
                tasks.append(lane.task)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self._close_timeout_s)
            for task in late:
                task.cancel()  # its senders get ConnectionClosed
            if late:
                await asyncio.wait(late)
        await self._inner.close()
