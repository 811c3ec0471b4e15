"""The real ports of a trigger (:mod:`actors.triggers.core`): Kafka in and out, the bus in
between, and the ``arguments:`` template or ``map:`` callable turning records into calls."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from actors.triggers.core import Mapper
from actors.triggers.record import TriggerRecord
from actors.triggers.template import Template
from cluster.config import BusConfig
from cluster.triggers.settings import TriggerConfig
from transports.errors import BusError
from transports.kafka.config import KafkaTransportConfig
from transports.kafka.record_sink import KafkaRecordWriter
from transports.kafka.record_source import KafkaRecordSource, RecordDelivery

__all__ = [
    "BusCaller",
    "SourcePort",
    "TopicSink",
    "TriggerStartFailed",
    "kafka_settings",
    "mapper_for",
]


class TriggerStartFailed(BusError):
    """A trigger could not start (its topic, its tool, its map: callable, the broker)."""

    def __init__(self, trigger: str, reason: str) -> None:
        super().__init__(trigger, reason)
        self.trigger = trigger
        self.reason = reason

    def __str__(self) -> str:
        return f"trigger {self.trigger}: {self.reason}"


def kafka_settings(config: BusConfig, trigger: TriggerConfig, replica: int) -> KafkaTransportConfig:
    """The Kafka client settings of one trigger replica (the bus's broker and security)."""
    kafka = config.kafka
    if kafka is None:  # refused by the configuration check
        raise TriggerStartFailed(trigger.name, "the bus has no kafka section")
    prefix = kafka.topic_prefix if kafka.topic_prefix is not None else f"{config.name}."
    return KafkaTransportConfig(
        bootstrap=kafka.bootstrap,
        group_id=trigger.group(prefix),
        client_id=f"raybus-trigger-{trigger.name}-{replica}",
        partitions=kafka.partitions,
        replication_factor=kafka.replication_factor,
        security=kafka.security,
    )


class SourcePort:
    """A :class:`KafkaRecordSource` as the core's Source: records as TriggerRecords."""

    def __init__(self, source: KafkaRecordSource) -> None:
        self._source = source

    async def receive(self) -> _Delivery:
        delivery = await self._source.receive()
        return _Delivery(delivery)


class _Delivery:
    def __init__(self, delivery: RecordDelivery) -> None:
        raw = delivery.record
        self.record = TriggerRecord(
            raw_key=raw.key,
            raw_value=raw.value,
            raw_headers=raw.headers,
            topic=raw.topic,
            partition=raw.partition,
            offset=raw.offset,
            timestamp_ms=raw.timestamp_ms,
        )
        self._ack = delivery.ack

    async def ack(self) -> None:
        await self._ack()


class TopicSink:
    """One topic of a :class:`KafkaRecordWriter`, as the core's Sink."""

    def __init__(self, writer: KafkaRecordWriter, topic: str) -> None:
        self._writer = writer
        self.topic = topic

    async def write(
        self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        await self._writer.write(self.topic, key, value, headers)


class BusCaller:
    """Calls through an ordinary bus client (routing, regions, breakers apply)."""

    def __init__(self, client: Any, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s

    async def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._client.request(
            "tools/call",
            {"name": tool, "arguments": arguments},
            name=tool,
            timeout_s=self._timeout_s,
        )
        return result


def mapper_for(trigger: TriggerConfig) -> Mapper:
    """The trigger's record -> arguments function.

    Raises:
        TriggerStartFailed: ``map:`` cannot be imported or is not callable.
    """
    if trigger.arguments is not None:
        template = Template.parse(trigger.arguments)

        async def render(record: TriggerRecord) -> dict[str, Any] | None:
            return template.render(record.view())

        return render
    assert trigger.map is not None  # exactly one of them: the configuration's rule
    function = _import_callable(trigger.name, trigger.map)

    async def call_map(record: TriggerRecord) -> dict[str, Any] | None:
        if inspect.iscoroutinefunction(function):
            out = await function(record)
        else:  # a user's code may block: never on the actor's event loop
            out = await asyncio.to_thread(function, record)
        if out is not None and not isinstance(out, dict):
            raise TypeError(f"map returned {type(out).__name__}, not a dict of arguments or None")
        return out

    return call_map


def _import_callable(trigger: str, path: str) -> Callable[..., Any]:
    module_name, _, attribute = path.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to read
        raise TriggerStartFailed(trigger, f"map: cannot import {path!r}: {exc}") from None
    if not callable(found):
        raise TriggerStartFailed(trigger, f"map: {path!r} is not callable")
    return found  # type: ignore[no-any-return]
