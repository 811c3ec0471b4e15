"""The Kafka transport's idempotent producer, replaced when aiokafka can no longer use it.

Why a replacement is needed: an idempotent producer numbers the records of each
partition, and the broker accepts only the next number. aiokafka assigns a batch its
numbers when it takes the batch out of its queue, and gives the batch up in a few cases:
a batch that waited longer than ``request_timeout_ms`` for a partition without a leader
(what a broker that is stopping or starting reports), a batch the broker refused for
good, or every batch when its sender task died. The numbers of a batch given up are
never sent, and unlike the Java client (which bumps the producer epoch and starts the
partition's numbers again) aiokafka never resynchronises: every later record of that
partition is refused with ``OutOfOrderSequenceNumber``, for as long as the process
lives (aiokafka issue #1017). A broker away longer than the request timeout did exactly
that to a bus: after it came back, every request and every answer was refused.

So :class:`ProducerSlot` retires its producer the moment aiokafka gives a record up (or
refuses to take one for a reason other than a timeout or its size), and the next send
starts a new producer, which the broker knows by a new producer id, numbering from zero.
The record given up fails to its sender (it was not written: the sender may say "not
sent"); nothing the broker acknowledged is touched. While the broker is still away the
new producer cannot start: the send waits, trying again, until it starts or the
sender's own deadline ends the wait (the transport's ``delivery_timeout_s``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    ProducerClosed,
)

__all__ = ["ProducerSlot"]

logger = logging.getLogger(__name__)

# Refusals of ``send`` that leave the producer's numbering intact: nothing was queued.
_HARMLESS_REFUSALS = (KafkaTimeoutError, MessageSizeTooLargeError)


class ProducerSlot:
    """One live producer at a time, made by ``make`` and started on first use.

    Not thread-safe: owned by one event loop.
    """

    def __init__(
        self,
        make: Callable[[], AIOKafkaProducer],
        *,
        name: str,
        close_timeout_s: float,
        retry_backoff_s: float = 0.5,
    ) -> None:
        self._make = make
        self._retry_backoff_s = retry_backoff_s
        self._name = name
        self._close_timeout_s = close_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._closed = False
        self.replacements = 0  # producers retired so far (read by tests and logs)

    async def start(self) -> None:
        """Start the first producer.

        Raises:
            KafkaError: the broker cannot be reached or refused; ProducerClosed once
                closed.
        """
        await self._current(wait=False)

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        """Queue one record; the future resolves when the broker has it.

        A send that finds no live producer starts one, waiting for a broker that is away
        (bound it with the caller's own timeout).

        Raises:
            KafkaError: a new producer was refused for good, or the producer refused the
                record (then it is retired, unless the refusal left it intact).
        """
        producer = await self._current()
        try:
            acked: asyncio.Future[Any] = await producer.send(topic, value, key=key, headers=headers)
        except _HARMLESS_REFUSALS:
            raise
        except KafkaError as exc:  # e.g. its sender task died: it takes nothing any more
            self._retire(producer, exc)
            raise
        acked.add_done_callback(lambda future: self._check(producer, future))
        return acked

    def _check(self, producer: AIOKafkaProducer, acked: asyncio.Future[Any]) -> None:
        if acked.cancelled():
            return  # our caller stopped waiting: the record is still in the producer
        exc = acked.exception()
        if isinstance(exc, KafkaError):
            self._retire(producer, exc)

    async def _current(self, *, wait: bool = True) -> AIOKafkaProducer:
        """The live producer, starting one if needed. With ``wait``, a start the broker
        refuses as unreachable is tried again (paced) until it works or the caller's own
        deadline cancels the wait: a send made while the broker is away waits for it, as
        it would inside a live producer, instead of failing at once."""
        if self.closed():
            raise ProducerClosed()
        producer = self._producer
        if producer is not None:
            return producer
        async with self._starting:  # one start at a time; the others use its producer
            while (producer := self._producer) is None:
                producer = self._make()
                try:
                    await producer.start()
                except KafkaError as exc:
                    self._stop_later(producer)
                    if not (wait and exc.retriable):
                        raise
                    await asyncio.sleep(self._retry_backoff_s)  # pacing, bounded by the caller
                    continue
                except BaseException:
                    self._stop_later(producer)
                    raise
                if self.closed():  # closed while it started
                    self._stop_later(producer)
                    raise ProducerClosed()
                self._producer = producer
            return producer

    def closed(self) -> bool:
        return self._closed

    def _retire(self, producer: AIOKafkaProducer, cause: BaseException) -> None:
        if self._producer is not producer:
            return  # retired already (several of its records fail at once)
        self._producer = None
        self.replacements += 1
        logger.warning(
            "kafka producer %s retired after %r: aiokafka gave a record up, so its "
            "numbering no longer matches the broker's; the next send starts a new one",
            self._name,
            cause,
        )
        self._stop_later(producer)

    def _stop_later(self, producer: AIOKafkaProducer) -> None:
        task = asyncio.get_running_loop().create_task(self._stop(producer))
        self._retiring.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._retiring.discard)

    async def _stop(self, producer: AIOKafkaProducer) -> None:
        # Stopping must neither hang nor raise: nobody waits for a retired producer.
        try:
            async with asyncio.timeout(self._close_timeout_s):
                await producer.stop()
        except (KafkaError, TimeoutError, OSError) as exc:
            logger.warning("stopping a kafka producer of %s failed: %r", self._name, exc)

    async def close(self) -> None:
        """Stop the live producer (flushing it, bounded) and wait for retired ones."""
        self._closed = True  # a start under way sees it and stops what it started
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._stop(producer)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
