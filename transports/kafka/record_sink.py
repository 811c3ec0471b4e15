"""Raw records written to Kafka topics, each confirmed by the broker before ``write`` returns.

:class:`KafkaRecordWriter` is what an event trigger writes its outputs and dead letters
with: one idempotent producer (``acks=all``, replaced when aiokafka gives a record up:
:class:`~transports.kafka.producer.ProducerSlot`), topics created on start if missing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError

from transports.errors import ConnectionClosed, MessageTooLarge
from transports.kafka.admin import KAFKA_ERRORS, ensure_topics, translate_kafka_error
from transports.kafka.clients import new_producer
from transports.kafka.config import KafkaTransportConfig
from transports.kafka.producer import ProducerSlot

__all__ = ["KafkaRecordWriter"]

logger = logging.getLogger(__name__)


class KafkaRecordWriter:
    """Writes records to any topic of one broker; ``await start()``, then :meth:`write`."""

    def __init__(self, config: KafkaTransportConfig, topics: Collection[str]) -> None:
        self._config = config
        self._topics = sorted(set(topics))
        self._producer: ProducerSlot | None = None

    async def start(self) -> None:
        """Create the topics that are missing, start the producer.

        Raises:
            BusTimeout / TransportError: the broker is unreachable or refused.
        """
        config = self._config
        await ensure_topics(
            config.bootstrap,
            self._topics,
            config.partitions,
            config.replication_factor,
            security=config.security,
        )
        options = config.security.client_options()
        producer = ProducerSlot(
            lambda: new_producer(config, options),
            name=config.client_id,
            close_timeout_s=config.close_timeout_s,
        )
        try:
            await producer.start()
        except KAFKA_ERRORS as exc:
            await producer.close()
            raise translate_kafka_error(exc, "start", config.request_timeout_ms / 1000) from exc
        self._producer = producer

    async def write(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Returns once the broker has the record (acks=all).

        Raises:
            MessageTooLarge: the broker (or the producer) refuses its size: never written.
            BusTimeout: not confirmed within ``delivery_timeout_s`` (it may still land).
            ConnectionClosed / TransportError: closed, or the broker refused.
        """
        producer = self._producer
        if producer is None:
            raise ConnectionClosed("the record writer is closed or not started")
        timeout_s = self._config.delivery_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                acked = await producer.send(topic, value, key, headers)
                await acked
        except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
            raise MessageTooLarge(len(value), self._config.max_message_bytes) from exc
        except (*KAFKA_ERRORS, TimeoutError) as exc:
            raise translate_kafka_error(exc, f"write to {topic}", timeout_s) from exc

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.close()
