"""Raw records of one Kafka topic, in a consumer group, committed only when acked.

:class:`KafkaRecordSource` is what an event trigger reads: records as bytes (no JSON-RPC
decoding: they are anyone's data), each handed out with an ``ack``. The rules:

- Manual commits only. A partition's offset is committed up to the first record not yet
  acked (:class:`~transports.kafka.offsets.PartitionBook`): records acked out of order
  wait for the ones before them, so a commit never passes a record still in hand. ``ack``
  returns once the commit is done; a commit that fails is retried in the background (the
  records it covers are done, only their redelivery after a crash is at stake).
- Nothing is fetched for nobody: :meth:`receive` takes one record per call, and while no
  receive is waiting the source pauses its partitions and keeps polling the group empty
  (so a member whose calls are slow is not taken for dead after ``max_poll_interval``).
  aiokafka's own prefetch (bounded per partition) is not consumption: nothing is
  committed past a record no receive returned.
- ``start="latest"`` is pinned at the group's first start: a partition without a
  committed offset gets its current position committed on assignment, so a source that
  restarts before its first ack skips nothing produced in between.
- After a rebalance, records in hand of a revoked partition become stale (their ack does
  nothing) and are delivered again to the partition's new owner: at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from transports.errors import BusError, BusTimeout, ConnectionClosed, TransportError
from transports.kafka.admin import (
    KAFKA_ERRORS,
    KafkaLagReader,
    explain_kafka_error,
    translate_kafka_error,
)
from transports.kafka.clients import commit_within, new_consumer
from transports.kafka.config import KafkaTransportConfig
from transports.kafka.offsets import Claim, PartitionBook, Settled, due_commits, mark_committed
from transports.raw_records import RawRecord, RecordDelivery

__all__ = ["KafkaRecordSource", "TopicMissing"]

logger = logging.getLogger(__name__)

_POLL_MS = 500  # one fetch wait; bounds how long close or a rebalance waits for receive
_KEEPALIVE_S = 5.0  # an idle member polls (paused) at least this often
_COMMIT_RETRY_S = 1.0  # pacing of a failed commit's retry
_JOIN_GRACE_S = 50.0  # beyond the session timeout: a group join on a loaded 2-core machine


class TopicMissing(TransportError):
    """A source topic that does not exist (a trigger never creates its source)."""

    def __init__(self, topic: str) -> None:
        super().__init__(topic)
        self.topic = topic

    def __str__(self) -> str:
        return f"kafka topic {self.topic!r} does not exist"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaRecordSource, consumer: AIOKafkaConsumer) -> None:
        self._source = source
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._source._commit_quietly()
        for partition in revoked:
            self._source._books.pop(partition, None)
        self._source._stash.clear()  # fetched from partitions that may be gone: read again
        logger.info("trigger source: partitions revoked: %s", sorted(map(tuple, revoked)))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        partitions = list(assigned)
        for partition in partitions:
            self._source._books[partition] = PartitionBook()
        if self._source._start == "latest":
            await self._pin(partitions)
        self._source._assigned.set()
        logger.info("trigger source: partitions assigned: %s", sorted(map(tuple, partitions)))

    async def _pin(self, partitions: list[TopicPartition]) -> None:
        """Commit where a partition without a committed offset starts ("latest" now)."""
        try:
            unpinned = [tp for tp in partitions if await self._consumer.committed(tp) is None]
            if unpinned:
                # aiokafka resolves positions in this callback (its own docs rely on it).
                points = {tp: await self._consumer.position(tp) for tp in unpinned}
                await self._consumer.commit(points)
                logger.info("trigger source: start pinned at %s", points)
        except (*KAFKA_ERRORS, TimeoutError) as exc:
            logger.warning("trigger source: could not pin the start offsets: %r", exc)


class KafkaRecordSource:
    """Records of ``topic`` for one member of ``config.group_id``; ``await start()``."""

    def __init__(
        self, config: KafkaTransportConfig, topic: str, *, start: Literal["latest", "earliest"]
    ) -> None:
        if config.group_id is None:
            raise ValueError("a record source needs a consumer group (config.group_id)")
        self._config = config.model_copy(update={"auto_offset_reset": start})
        self._topic = topic
        self._start = start
        self._consumer: AIOKafkaConsumer | None = None
        self._books: dict[TopicPartition, PartitionBook] = {}
        self._stash: deque[Any] = deque()  # fetched, not yet handed out
        self._receiving = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._last_poll = 0.0
        self._background: set[asyncio.Task[None]] = set()
        self._lag: KafkaLagReader | None = None
        self._closed = False
        self._assigned = asyncio.Event()  # the group gave this member its first assignment

    @property
    def topic(self) -> str:
        return self._topic

    async def start(self) -> None:
        """Join the group; returns once this member has its first assignment.

        Raises:
            TopicMissing: the topic does not exist.
            BusTimeout / TransportError: the broker is unreachable or refused.
        """
        config = self._config
        options = config.security.client_options()
        consumer = new_consumer(config, options)
        try:
            await consumer.start()
            if self._topic not in await consumer.topics():
                raise TopicMissing(self._topic)
        except BaseException as exc:
            await self._stop_consumer(consumer)
            if isinstance(exc, KAFKA_ERRORS):
                timeout_s = config.request_timeout_ms / 1000
                raise await explain_kafka_error(
                    exc, "start", timeout_s, config.bootstrap, options
                ) from exc
            raise
        consumer.subscribe([self._topic], listener=_Rebalance(self, consumer))
        self._consumer = consumer
        try:
            await self._joined(consumer)
        except BaseException:
            self._consumer = None
            await self._stop_consumer(consumer)
            raise
        self._last_poll = asyncio.get_running_loop().time()
        self._spawn(self._keep_polling())
        self._lag = KafkaLagReader(config.bootstrap, security=config.security)
        logger.info("trigger source started: %s (group %s)", self._topic, config.group_id)

    async def _joined(self, consumer: AIOKafkaConsumer) -> None:
        """Wait for the first assignment (even an empty one), so a record produced once
        :meth:`start` returned is read even with ``start="latest"``."""
        timeout_s = self._config.session_timeout_ms / 1000 + _JOIN_GRACE_S
        try:
            async with asyncio.timeout(timeout_s):
                while not self._assigned.is_set():
                    batch = await consumer.getmany(timeout_ms=_POLL_MS, max_records=1)
                    self._stash.extend(r for records in batch.values() for r in records)
        except TimeoutError:
            raise BusTimeout(f"joining kafka group {self._config.group_id}", timeout_s) from None
        except KAFKA_ERRORS as exc:
            raise translate_kafka_error(exc, "group join", timeout_s) from exc

    async def receive(self) -> RecordDelivery:
        """The next record of an assigned partition (waits for one).

        Raises:
            ConnectionClosed: not started or closed.
            BusTimeout / TransportError: the fetch failed (the next call tries again).
        """
        async with self._receiving:
            while True:
                consumer = self._live()
                if self._stash:
                    record = self._stash.popleft()
                else:
                    if paused := consumer.paused():
                        consumer.resume(*paused)
                    record = await self._fetch_one(consumer)
                    if record is None:
                        continue
                partition = TopicPartition(record.topic, record.partition)
                book = self._books.get(partition)
                claim = None if book is None else book.claim(record.offset)
                if book is None or claim is None:
                    continue  # revoked meanwhile, or in hand already
                return self._delivery(record, partition, book, claim)

    async def _fetch_one(self, consumer: AIOKafkaConsumer) -> Any:
        try:
            batch = await consumer.getmany(timeout_ms=_POLL_MS, max_records=1)
        except KAFKA_ERRORS as exc:
            timeout_s = self._config.request_timeout_ms / 1000
            raise translate_kafka_error(exc, "fetch", timeout_s) from exc
        finally:
            self._last_poll = asyncio.get_running_loop().time()
        records = [record for records in batch.values() for record in records]
        self._stash.extend(records[1:])
        return records[0] if records else None

    def _delivery(
        self, record: Any, partition: TopicPartition, book: PartitionBook, claim: Claim
    ) -> RecordDelivery:
        raw = RawRecord(
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
            key=record.key,
            value=record.value,
            headers=tuple((name, bytes(value or b"")) for name, value in record.headers or ()),
        )
        offset = record.offset

        async def ack() -> None:
            if self._books.get(partition) is not book or not book.settle(
                offset, claim, Settled.ACKED
            ):
                logger.debug("stale ack of %s@%d ignored", partition, offset)
                return
            await self._commit_quietly()

        return RecordDelivery(raw, ack)

    def _live(self) -> AIOKafkaConsumer:
        if self._consumer is None or self._closed:
            raise ConnectionClosed("the record source is closed or not started")
        return self._consumer

    async def _keep_polling(self) -> None:
        """While no receive runs, poll with every partition paused (see module doc)."""
        loop = asyncio.get_running_loop()
        while not self._closed:
            await asyncio.sleep(_KEEPALIVE_S / 2)  # pacing: a member's liveness, not a sync
            if self._receiving.locked() or loop.time() - self._last_poll < _KEEPALIVE_S:
                continue
            async with self._receiving:
                consumer = self._consumer
                if consumer is None or self._closed:
                    return
                consumer.pause(*consumer.assignment())
                try:
                    batch = await consumer.getmany(timeout_ms=0)
                except KAFKA_ERRORS as exc:
                    logger.info("trigger source: idle poll failed: %r", exc)
                    continue
                finally:
                    self._last_poll = loop.time()
                self._stash.extend(r for records in batch.values() for r in records)

    async def _commit_quietly(self) -> None:
        """Commit what is due; a failure is logged and retried in the background."""
        try:
            await self._commit()
        except BusError as exc:
            logger.warning("trigger source: commit failed, retrying: %s", exc)
            self._spawn(self._commit_later())

    async def _commit_later(self) -> None:
        while not self._closed:
            await asyncio.sleep(_COMMIT_RETRY_S)  # pacing of the retry
            try:
                await self._commit()
                return
            except BusError as exc:
                logger.warning("trigger source: commit failed again: %s", exc)

    async def _commit(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        # One commit at a time, each with the latest points: never moves an offset back.
        async with self._commit_lock:
            due = due_commits(self._books)
            if not due:
                return
            timeout_s = self._config.request_timeout_ms / 1000
            await commit_within(consumer, due, timeout_s)
            mark_committed(self._books, due)

    async def lag(self) -> int:
        """Records of the topic the group has not committed (end - committed, summed).

        Raises:
            BusTimeout / TransportError / ConnectionClosed: the query failed.
        """
        if self._lag is None:
            raise ConnectionClosed("the record source is not started")
        group = self._config.group_id
        assert group is not None  # checked in __init__
        return await self._lag.lag(group, self._topic)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Commit what is acked, leave the group (unacked records go to other members)."""
        if self._closed:
            return
        self._closed = True
        async with self._receiving:  # a receive under way sees it within one poll
            pass
        for task in list(self._background):
            task.cancel()
        with contextlib.suppress(BusError):
            await self._commit()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await self._stop_consumer(consumer)
        if self._lag is not None:
            await self._lag.close()
        self._books.clear()

    async def _stop_consumer(self, consumer: AIOKafkaConsumer) -> None:
        try:
            async with asyncio.timeout(self._config.close_timeout_s):
                await consumer.stop()
        except (*KAFKA_ERRORS, TimeoutError, OSError) as exc:
            logger.warning("stopping a trigger's kafka consumer failed: %r", exc)
