"""The aiokafka clients a Kafka transport runs, built from its config (one place, so a
replacement is made exactly like the first; see :mod:`transports.kafka.producer` and
``KafkaTransport``'s consumer replacement for why they are replaced)."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from transports.kafka.config import KafkaTransportConfig

__all__ = ["new_consumer", "new_producer"]


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
