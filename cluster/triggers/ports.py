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
from cluster.triggers.errors import TriggerStartFailed
from cluster.triggers.settings import Place, TriggerConfig
from transports.kafka.config import KafkaTransportConfig
from transports.kafka.record_sink import KafkaRecordWriter
from transports.kafka.record_source import KafkaRecordSource
from transports.raw_records import RecordDelivery
from transports.sqs.records import SqsRecordSource, SqsRecordWriter
from transports.sqs.wire import SqsConfig

__all__ = [
    "BusCaller",
    "RecordSource",
    "SourcePort",
    "TriggerStartFailed",
    "Writers",
    "import_callable",
    "kafka_settings",
    "mapper_for",
    "source_for",
    "sqs_settings",
]

RecordSource = KafkaRecordSource | SqsRecordSource


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


def sqs_settings(config: BusConfig, trigger: TriggerConfig) -> SqsConfig:
    """The SQS client settings of a trigger (the bus's endpoint and credentials; queue
    names are the trigger's own, without the bus's prefix)."""
    sqs = config.sqs
    if sqs is None:  # refused by the configuration check
        raise TriggerStartFailed(trigger.name, "the bus has no sqs section")
    return SqsConfig(
        endpoint_url=sqs.endpoint_url,
        region=sqs.region,
        visibility_timeout_s=sqs.visibility_timeout_s,
        wait_time_seconds=sqs.wait_time_seconds,
        aws_access_key_id=sqs.aws_access_key_id,
        aws_secret_access_key=sqs.aws_secret_access_key,
        aws_session_token=sqs.aws_session_token,
        aws_profile=sqs.aws_profile,
    )


def source_for(config: BusConfig, trigger: TriggerConfig, replica: int) -> RecordSource:
    """The trigger's source, not started."""
    place = trigger.source_place
    if place.broker == "sqs":
        return SqsRecordSource(sqs_settings(config, trigger), place.name, place.url)
    kafka = trigger.source.kafka
    assert kafka is not None  # the place says kafka
    return KafkaRecordSource(
        kafka_settings(config, trigger, replica), place.name, start=kafka.start
    )


class Writers:
    """What writes a trigger's outputs and dead letters: one client per broker used."""

    def __init__(self, config: BusConfig, trigger: TriggerConfig, replica: int) -> None:
        places = [trigger.dead_letter_place, *filter(None, [trigger.output_place])]
        topics = [p.name for p in places if p.broker == "kafka"]
        queues = {p.name: p.url for p in places if p.broker == "sqs"}
        self._kafka = (
            KafkaRecordWriter(kafka_settings(config, trigger, replica), topics) if topics else None
        )
        self._sqs = SqsRecordWriter(sqs_settings(config, trigger), queues) if queues else None

    async def start(self) -> None:
        """Raises: BusTimeout / TransportError / ConnectionClosed (a broker refused)."""
        if self._kafka is not None:
            await self._kafka.start()
        if self._sqs is not None:
            await self._sqs.start()

    def sink(self, place: Place) -> _PlaceSink:
        writer = self._kafka if place.broker == "kafka" else self._sqs
        assert writer is not None  # made for every place of the trigger
        return _PlaceSink(writer, place.name)

    async def close(self) -> None:
        for writer in (self._kafka, self._sqs):
            if writer is not None:
                await writer.close()


class _PlaceSink:
    """One topic or queue of a writer, as the core's Sink."""

    def __init__(self, writer: KafkaRecordWriter | SqsRecordWriter, name: str) -> None:
        self._writer = writer
        self._name = name

    async def write(
        self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        await self._writer.write(self._name, key, value, headers)


class SourcePort:
    """A record source as the core's Source: records as TriggerRecords."""

    def __init__(self, source: RecordSource) -> None:
        self._source = source

    async def receive(self, limit: int) -> list[_Delivery]:
        if isinstance(self._source, SqsRecordSource):  # up to 10 messages per request
            return [_Delivery(d) for d in await self._source.receive(limit)]
        return [_Delivery(await self._source.receive())]  # Kafka's come from its fetch buffer


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
            message_id=raw.message_id,
        )
        self._ack = delivery.ack

    async def ack(self) -> None:
        await self._ack()


class BusCaller:
    """Calls through an ordinary bus client (routing, regions, breakers apply)."""

    def __init__(self, client: Any, timeout_s: float) -> None:
        self._client = client
        self._timeout_s = timeout_s

    async def call(
        self, tool: str, arguments: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._client.request(
            "tools/call",
            {"name": tool, "arguments": arguments},
            name=tool,
            timeout_s=self._timeout_s,
            idempotency_key=idempotency_key,
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
    function = import_callable(trigger.name, trigger.map)

    async def call_map(record: TriggerRecord) -> dict[str, Any] | None:
        if inspect.iscoroutinefunction(function):
            out = await function(record)
        else:  # a user's code may block: never on the actor's event loop
            out = await asyncio.to_thread(function, record)
        if out is not None and not isinstance(out, dict):
            raise TypeError(f"map returned {type(out).__name__}, not a dict of arguments or None")
        return out

    return call_map


def import_callable(trigger: str, path: str) -> Callable[..., Any]:
    """The callable a trigger's ``map:`` names (raises TriggerStartFailed saying why not)."""
    module_name, _, attribute = path.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to read
        raise TriggerStartFailed(trigger, f"map: cannot import {path!r}: {exc}") from None
    if not callable(found):
        raise TriggerStartFailed(trigger, f"map: {path!r} is not callable")
    return found  # type: ignore[no-any-return]
