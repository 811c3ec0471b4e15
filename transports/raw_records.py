"""Records as a broker holds them, for readers that do not speak JSON-RPC (event
triggers): the bytes, where they sit, and how to acknowledge them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["RawRecord", "RecordDelivery"]


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record or message. ``topic`` is a Kafka topic or an SQS queue's name;
    ``message_id`` is set for SQS (``partition`` and ``offset`` for Kafka)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class RecordDelivery:
    """A record handed to a reader; ``ack`` once done with it (commit, delete)."""

    record: RawRecord
    ack: Callable[[], Awaitable[None]]
