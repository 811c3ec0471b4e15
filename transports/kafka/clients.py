"""The aiokafka clients a Kafka transport runs, built from its config (one place, so a
replacement is made exactly like the first; see :mod:`transports.kafka.producer` and
``KafkaTransport``'s consumer replacement for why they are replaced)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from transports.errors import BusTimeout
from transports.kafka.admin import KAFKA_ERRORS, translate_kafka_error
from transports.kafka.config import KafkaTransportConfig

__all__ = [
    "commit_within",
    "new_consumer",
    "new_producer",
    "record_kept",
    "wait_for_assignment",
    "wait_for_topic_metadata",
]

# Pacing of the metadata rounds while a new consumer waits for its assignment (bounded).
_ASSIGNMENT_POLL_S = 0.05


def new_producer(config: KafkaTransportConfig, options: dict[str, Any]) -> AIOKafkaProducer:
    """An idempotent producer (acks from every replica), not started."""
    return AIOKafkaProducer(
        bootstrap_servers=config.bootstrap,
        client_id=config.client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=config.linger_ms,
        request_timeout_ms=config.request_timeout_ms,
        # Dead-lettering forwards records over our own cap, up to the broker's.
        max_request_size=max(config.max_message_bytes, 1024 * 1024) + 64 * 1024,
        **options,
    )


def new_consumer(config: KafkaTransportConfig, options: dict[str, Any]) -> AIOKafkaConsumer:
    """A consumer with manual commits, not started nor subscribed."""
    return AIOKafkaConsumer(
        bootstrap_servers=config.bootstrap,
        client_id=config.client_id,
        group_id=config.group_id,
        enable_auto_commit=False,
        auto_offset_reset=config.auto_offset_reset,
        fetch_max_wait_ms=config.fetch_max_wait_ms,
        heartbeat_interval_ms=config.heartbeat_interval_ms,
        session_timeout_ms=config.session_timeout_ms,
        request_timeout_ms=config.request_timeout_ms,
        **options,
    )


async def wait_for_assignment(
    consumer: AIOKafkaConsumer, topics: Iterable[str], timeout_s: float
) -> None:
    """Return once every topic of ``topics`` has a partition assigned to ``consumer``.

    A group-less consumer is assigned from the cluster's metadata; a topic created a
    moment ago can be missing from its first fetch ("not found in cluster metadata"),
    and aiokafka fetches it again on its own only every ``metadata_max_age_ms`` (5 min):
    a client's answers would wait that long. Each round has the consumer's own client
    fetch the metadata again (``consumer.topics()`` fetches a copy it does not apply;
    ``force_metadata_update`` is aiokafka's client API, reached through the consumer's
    private ``_client``, here and in :func:`wait_for_topic_metadata` only).

    Raises:
        BusTimeout: not assigned within ``timeout_s``.
    """
    wanted = set(topics)

    def assigned() -> bool:
        return wanted <= {tp.topic for tp in consumer.assignment()}

    await _fetch_metadata_until(
        consumer, assigned, f"kafka assignment of {sorted(wanted)}", timeout_s
    )


async def wait_for_topic_metadata(
    consumer: AIOKafkaConsumer, topics: Iterable[str], timeout_s: float
) -> None:
    """Return once the consumer's own metadata knows every topic of ``topics``.

    A subscription decided on metadata that misses a topic created a moment ago (the
    broker had not spread it yet: "not found in cluster metadata") gets no partition of
    it until aiokafka's next periodic fetch, 5 min later: under load a new transport's
    receives starved for a minute and more. Usually the first check passes and this
    costs nothing; it does not wait for the group to be joined.

    Raises:
        BusTimeout: not known within ``timeout_s``.
    """
    wanted = set(topics)
    cluster = consumer._client.cluster

    def known() -> bool:
        return all(cluster.partitions_for_topic(topic) is not None for topic in wanted)

    await _fetch_metadata_until(consumer, known, f"kafka metadata of {sorted(wanted)}", timeout_s)


async def _fetch_metadata_until(
    consumer: AIOKafkaConsumer, done: Callable[[], bool], what: str, timeout_s: float
) -> None:
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + timeout_s
    while not done():
        if loop.time() > give_up_at:
            raise BusTimeout(what, timeout_s)
        try:
            await consumer._client.force_metadata_update()
        except KAFKA_ERRORS as exc:
            raise translate_kafka_error(exc, "metadata", timeout_s) from exc
        if not done():  # the broker is still spreading it, or the group rebalancing
            await asyncio.sleep(_ASSIGNMENT_POLL_S)


async def commit_within(
    consumer: AIOKafkaConsumer, offsets: Mapping[Any, int], timeout_s: float
) -> None:
    """Commit ``offsets`` (partition -> next offset), bounded by ``timeout_s``.

    Raises:
        BusTimeout / TransportError: the commit failed or did not finish in time.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await consumer.commit(dict(offsets))
    except (*KAFKA_ERRORS, TimeoutError) as exc:
        raise translate_kafka_error(exc, "commit", timeout_s) from exc


def record_kept(getting: asyncio.Future[Any]) -> Any:
    """The record of a ``getone`` its receive leaves, to stash, or None (then cancelled).

    The consumer's position is already past a fetched record, so dropping it would skip
    it until the next rebalance: it waits in the stash for the next receive.
    """
    if not getting.done():
        getting.cancel()  # aiokafka's getone takes a record only as it returns
        return None
    if getting.cancelled() or getting.exception() is not None:
        return None
    return getting.result()
