"""What a Kafka transport is configured with: where it sends and reads, and how."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from transports.codec import DEFAULT_MAX_DEPTH
from transports.kafka.admin import TopicNames
from transports.kafka.security import KafkaSecurity

__all__ = ["DEFAULT_KAFKA_MAX_MESSAGE_BYTES", "KafkaTransportConfig"]

# Under the broker's default message.max.bytes (1 MiB + 12): room for headers and batch.
DEFAULT_KAFKA_MAX_MESSAGE_BYTES = 1_000_000


class KafkaTransportConfig(BaseModel):
    """Where a :class:`KafkaTransport` sends and receives, and how it talks to Kafka.

    Attributes:
        bootstrap: ``host:port[,host:port...]`` of the brokers.
        send_topic: where ``send`` produces; None = to each envelope's ``reply_to``.
        receive_topics: what ``receive`` consumes; empty = a send-only transport.
        group_id: the consumer group (a pool shares one); None = consume every
            partition alone, with nothing committed (``ack`` only does bookkeeping).
        topic_prefix: prefix of the dead-letter topic (and of :attr:`topics`).
        create_topics: create send, receive and dead-letter topics in ``start``.
        partitions / replication_factor: for the topics it creates.
        client_id: names the clients in broker logs; the key of keyless sends.
        max_message_bytes / max_depth: bounds on bodies sent and accepted.
        linger_ms, fetch_max_wait_ms, heartbeat_interval_ms: see the module docstring.
        commit_interval_ms: 0 = ``ack`` returns once its offset is committed; above 0,
            ``ack`` returns at once and the acks of one interval share one commit (a
            crash then redelivers at most that interval's acked records).
        request_timeout_ms / session_timeout_ms: aiokafka's request and group bounds.
        delivery_timeout_s: bound on one ``send`` until the broker acknowledged it.
        close_timeout_s: bound on stopping the clients.
        auto_offset_reset: where a group without a committed offset starts.
        security: TLS and SASL of every client (default PLAINTEXT, no SASL).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap: str
    send_topic: str | None = None
    receive_topics: tuple[str, ...] = ()
    group_id: str | None = None
    topic_prefix: str = ""
    create_topics: bool = True
    partitions: int = Field(default=1, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    client_id: str = "raybus"
    max_message_bytes: int = Field(default=DEFAULT_KAFKA_MAX_MESSAGE_BYTES, ge=1)
    max_depth: int = Field(default=DEFAULT_MAX_DEPTH, ge=1)
    linger_ms: int = Field(default=0, ge=0)
    fetch_max_wait_ms: int = Field(default=20, ge=0)
    commit_interval_ms: int = Field(default=0, ge=0)
    heartbeat_interval_ms: int = Field(default=500, ge=1)
    session_timeout_ms: int = Field(default=10_000, ge=1)
    request_timeout_ms: int = Field(default=15_000, ge=1)
    delivery_timeout_s: float = Field(default=30.0, gt=0)
    close_timeout_s: float = Field(default=10.0, gt=0)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    security: KafkaSecurity = KafkaSecurity()

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    @property
    def dead_letter_topic(self) -> str:
        return self.topics.dlq_topic()
