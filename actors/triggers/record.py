"""What a trigger sees of one source record: :class:`TriggerRecord`.

The same view feeds the argument template (``${value.id}``) and a ``map:`` callable, so
both read a record alike: ``key`` and ``headers`` as text, ``value`` JSON-decoded when its
bytes are JSON (else the UTF-8 text, else absent), ``raw`` as base64, and where the record
sits: ``topic``, ``partition``, ``offset``, ``timestamp`` of a Kafka record; ``queue``,
``message_id``, ``timestamp`` (sent) of an SQS message, whose message attributes are its
``headers`` and whose message group id (FIFO) is its ``key``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

__all__ = ["ABSENT", "TriggerRecord"]


class _Absent:
    """The value of a record whose bytes are neither JSON nor UTF-8 text (or None)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class TriggerRecord:
    """One record of a trigger's source, as its template and ``map:`` see it.

    Attributes:
        raw_key / raw_value: the record's bytes as the broker holds them.
        raw_headers: the record's headers in order (names may repeat).
        topic / partition / offset / timestamp_ms: where it sits (Kafka); of an SQS
            message, ``topic`` is its queue's name and ``timestamp_ms`` when it was sent.
        message_id: an SQS message's id (None: a Kafka record).
    """

    raw_key: bytes | None
    raw_value: bytes | None
    raw_headers: tuple[tuple[str, bytes], ...] = ()
    topic: str = ""
    partition: int = 0
    offset: int = 0
    timestamp_ms: int | None = None
    message_id: str | None = None

    @property
    def key(self) -> str | None:
        return None if self.raw_key is None else _text(self.raw_key)

    @cached_property
    def value(self) -> Any:
        """The value JSON-decoded, else its UTF-8 text, else :data:`ABSENT`."""
        if self.raw_value is None:
            return ABSENT
        try:
            text = self.raw_value.decode("utf-8")
        except UnicodeDecodeError:
            return ABSENT
        try:
            return json.loads(text)
        except (ValueError, RecursionError):  # not JSON (or nested past Python's limit)
            return text

    @property
    def headers(self) -> Mapping[str, str]:
        """Header values as text; of a repeated name, the last."""
        return {name: _text(value) for name, value in self.raw_headers}

    @property
    def position(self) -> str:
        """Where the record sits, as dead letters name it: ``topic/partition/offset`` or
        ``queue/message_id``."""
        if self.message_id is not None:
            return f"{self.topic}/{self.message_id}"
        return f"{self.topic}/{self.partition}/{self.offset}"

    @property
    def idempotency_key(self) -> str:
        """The record's identity across redeliveries (``raybus-trigger-key``): a Kafka
        record's position and timestamp (a topic made again starts its offsets over), an
        SQS message's queue and id (SQS keeps the id across redeliveries)."""
        if self.message_id is not None:
            return f"sqs/{self.position}"
        return f"kafka/{self.position}/{self.timestamp_ms or 0}"

    def source(self) -> dict[str, Any]:
        """Where the record sits, as an output envelope's ``source``."""
        if self.message_id is not None:
            return {"queue": self.topic, "message_id": self.message_id}
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    def view(self) -> dict[str, Any]:
        """The record as the template's root object (absent parts left out)."""
        view: dict[str, Any] = {"headers": dict(self.headers), **self.source()}
        if self.raw_key is not None:
            view["key"] = self.key
        if self.value is not ABSENT:
            view["value"] = self.value
        if self.raw_value is not None:
            view["raw"] = base64.b64encode(self.raw_value).decode("ascii")
        if self.timestamp_ms is not None:
            view["timestamp"] = self.timestamp_ms
        return view
