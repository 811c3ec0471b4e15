"""Kafka between clients and workers (``backend: kafka``).

* Requests go to ``<prefix>mcp.requests.<pool>``; every worker of a pool consumes it in
  ONE consumer group, so each request runs on exactly one worker.
* Responses and notifications go to ``<prefix>mcp.responses.<client-id>``, the topic a
  client names in its envelope's ``reply_to``.
* A request's offset is committed only after its response was produced. A redelivered
  request (rebalance, a worker dying before its commit) is recognised by its key in the
  pool-wide ledger (``cluster.ray_actors.ledger``): finished ones get their stored
  response again, running ones are awaited, none runs twice.

* Workers beat on ``<prefix>mcp.server.discovery``, which the discovery actor reads.
* The autoscaler's lag is the pool group's (end offset - committed offset), and a pool
  never grows past the topic's partitions (more consumers would sit idle).

Routing, scaling and draining stay on Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiokafka import AIOKafkaConsumer

from actors.discovery.registry import Heartbeat
from actors.worker.admission import admission_for
from actors.worker.hosted_server import HostedServer
from cluster.backends.base import HeartbeatFeed, LagRows, WorkerLink
from cluster.backends.broker import BrokerBackend, broker_lag
from cluster.backends.broker_source import BrokerWorkerSource, Publish
from cluster.backends.sealed import (
    SealedReceiver,
    channel_for,
    keys_follower,
    sealed_publish,
)
from cluster.config import BusConfig, KafkaBackendConfig, PoolConfig
from cluster.naming import HandleCache
from transports.base import Delivery
from transports.codec import decode_message
from transports.crypto.seal import Direction
from transports.errors import BusError, DeliveryUnconfirmed, InvalidMessage, MessageTooLarge
from transports.frame import Frame
from transports.kafka.admin import (
    KAFKA_ERRORS,
    KafkaLagReader,
    TopicNames,
    consumer_group_lag,
    ensure_topics,
    explain_kafka_error,
)
from transports.kafka.transport import KafkaTransport, KafkaTransportConfig

__all__ = [
    "DiscoveryTopicReader",
    "KafkaBackend",
    "KafkaClientWire",
    "KafkaTopicHeartbeats",
    "KafkaWorkerSource",
    "kafka_lag",
    "topics_for",
]

logger = logging.getLogger(__name__)

# How long a new client waits for its reply topic's assignment (a cold, loaded broker).
_ASSIGNMENT_TIMEOUT_S = 30.0


def topics_for(config: BusConfig) -> TopicNames:
    kafka = _settings(config)
    return TopicNames(kafka.topic_prefix if kafka.topic_prefix is not None else f"{config.name}.")


def group_for(config: BusConfig, pool: str) -> str:
    return f"raybus.{config.name}.{pool}"


def _settings(config: BusConfig) -> KafkaBackendConfig:
    if config.kafka is None:
        raise ValueError("the bus has no kafka settings")
    return config.kafka


class KafkaWorkerSource(BrokerWorkerSource):
    """A worker's consumer of its pool's request topic (one consumer group per pool)."""

    def __init__(
        self,
        config: BusConfig,
        pool: str,
        hosted: HostedServer,
        ledger: Any,
        *,
        capacity: int,
        call_timeout_s: float,
        client_id: str,
    ) -> None:
        settings = _settings(config)
        topics = topics_for(config)
        self._transport = KafkaTransport(
            KafkaTransportConfig(
                bootstrap=settings.bootstrap,
                receive_topics=(topics.requests_for_capability(pool),),
                group_id=group_for(config, pool),
                topic_prefix=topics.prefix,
                partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                commit_interval_ms=settings.commit_interval_ms,
                client_id=client_id,
                security=settings.security,
            )
        )
        self._discovery_topic = topics.discovery_topic()
        receiver: SealedReceiver | KafkaTransport = self._transport
        publish: Publish = self._transport.queue_frame_to
        self._channel = channel = channel_for(config, client_id, Direction.TO_CLIENT)
        if channel is not None:  # the bus is encrypted end to end
            accepts = frozenset({topics.requests_for_capability(pool)})
            follower = keys_follower(config, channel, f"worker {client_id}")
            receiver = SealedReceiver(self._transport, channel, accepts, follower)
            publish = sealed_publish(publish, channel)
        super().__init__(
            receiver,
            publish,
            hosted,
            ledger,
            pool=pool,
            capacity=capacity,
            call_timeout_s=call_timeout_s,
            duplicate_wait_s=settings.duplicate_wait_s,
            admission=admission_for(config.router.regions, pool),
        )

    async def publish_heartbeat(self, beat: Heartbeat) -> None:
        """Heartbeats travel on the discovery topic, which the discovery actor reads."""
        beat_json = beat.to_json()
        if self._channel is not None:  # its catalog names every tool: sealed too
            beat_json, _ = self._channel.seal_body(beat_json, None, self._discovery_topic)
        await self._transport.send_frame_to(self._discovery_topic, beat_json)


class KafkaTopicHeartbeats:
    """Beats on the discovery topic, through the worker's own producer."""

    answers = False  # nobody can ask back over a topic

    def __init__(self, source: KafkaWorkerSource) -> None:
        self._source = source

    async def send(self, beat: Heartbeat) -> bool:
        await self._source.publish_heartbeat(beat)
        return False


class KafkaClientWire:
    """A client's side: requests to pool topics, responses from its own topic.

    ``durable``: the client keeps its id across connections (``BusClient.connect(...,
    durable_id=...)``). Its reply topic is read in a consumer group of its own, each
    answer committed once handed to the client, so a reconnect reads on from there; the
    topic keeps answers ``response_retention_s``. Otherwise the topic is read group-less
    from its earliest record.
    """

    def __init__(self, config: BusConfig, client_id: str, *, durable: bool = False) -> None:
        settings = _settings(config)
        self._settings = settings
        self._topics = topics_for(config)
        self._durable = durable
        self.reply_topic = self._topics.responses_for_client(client_id.replace("/", "."))
        self._transport = KafkaTransport(
            KafkaTransportConfig(
                bootstrap=settings.bootstrap,
                receive_topics=(self.reply_topic,),
                group_id=f"raybus.{config.name}.client.{client_id}" if durable else None,
                topic_prefix=self._topics.prefix,
                partitions=1,
                replication_factor=settings.replication_factor,
                commit_interval_ms=0,  # an answer handed over is committed before the next
                client_id=client_id,
                security=settings.security,
            )
        )

    async def start(self) -> None:
        if self._durable:  # created first with its retention; the transport finds it
            settings = self._settings
            await ensure_topics(
                settings.bootstrap,
                [self.reply_topic],
                1,
                settings.replication_factor,
                security=settings.security,
                topic_configs={"retention.ms": str(settings.response_retention_s * 1000)},
            )
        await self._transport.start()
        if not self._durable:  # group-less: answers must not wait for a metadata refresh
            await self._transport.wait_for_assignment(_ASSIGNMENT_TIMEOUT_S)

    @property
    def reply_to(self) -> str:
        return self.reply_topic

    def destination_for_pool(self, pool: str) -> str:
        return self._topics.requests_for_capability(pool)

    async def send(self, topic: str, frames: list[Frame]) -> list[tuple[Frame, BusError]]:
        failed: list[tuple[Frame, BusError]] = []
        queued: list[tuple[Frame, Awaitable[None]]] = []
        for index, frame in enumerate(frames):  # queued in order, then confirmed together
            try:
                confirmation = await self._transport.queue_frame_to(
                    topic, frame.body, frame.envelope
                )
            except MessageTooLarge as exc:
                failed.append((frame, exc))
            except BusError as exc:
                # Not queued, and nothing after it is either (order holds): not sent.
                failed.extend((rest, exc) for rest in frames[index:])
                break
            else:
                queued.append((frame, confirmation))
        outcomes = await asyncio.gather(*(c for _, c in queued), return_exceptions=True)
        for (frame, _), outcome in zip(queued, outcomes, strict=True):
            if isinstance(outcome, MessageTooLarge):  # the broker refused it: not written
                failed.append((frame, outcome))
            elif isinstance(outcome, BusError):
                # It left for the broker, which never confirmed it: aiokafka gives a
                # record up after a request that may have reached the broker, and such
                # records were seen delivered after a long outage.
                failed.append((frame, DeliveryUnconfirmed(f"kafka did not confirm: {outcome}")))
            elif isinstance(outcome, BaseException):
                raise outcome
        return failed

    async def next_delivery(self) -> Delivery:
        return await self._transport.receive()

    def is_connected(self) -> bool:
        return self._transport.is_connected()

    async def close(self) -> None:
        await self._transport.close()


async def kafka_lag(config: BusConfig, pool: str) -> int:
    """One pool's group lag, on clients opened for this query alone (one-off callers)."""
    settings = _settings(config)
    topic = topics_for(config).requests_for_capability(pool)
    return await consumer_group_lag(
        settings.bootstrap, group_for(config, pool), topic, security=settings.security
    )


class DiscoveryTopicReader:
    """The discovery actor's side of ``mcp.server.discovery``: heartbeats in, one by one."""

    def __init__(self, config: BusConfig, on_beat: Callable[[Heartbeat], None]) -> None:
        self._settings = _settings(config)
        self._topic = topics_for(config).discovery_topic()
        self._on_beat = on_beat
        self._channel = channel_for(config, "discovery", Direction.TO_WORKER)
        self._follower = (
            None if self._channel is None else keys_follower(config, self._channel, "discovery")
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self._settings
        if self._follower is not None:
            await self._follower.start()
        await ensure_topics(
            settings.bootstrap,
            [self._topic],
            1,
            settings.replication_factor,
            security=settings.security,
        )
        self._consumer = await self._started_consumer()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _started_consumer(self) -> AIOKafkaConsumer:
        settings = self._settings
        options = settings.security.client_options()
        # No group: every discovery replica reads every beat; only fresh beats matter.
        consumer = AIOKafkaConsumer(
            self._topic,
            bootstrap_servers=settings.bootstrap,
            auto_offset_reset="latest",
            **options,
        )
        try:
            await consumer.start()
        except KAFKA_ERRORS as exc:
            with contextlib.suppress(*KAFKA_ERRORS, OSError):
                await consumer.stop()  # a half-started client holds connections and tasks
            what = "discovery consumer start"
            raise await explain_kafka_error(exc, what, 0.0, settings.bootstrap, options) from exc
        return consumer

    async def _run(self) -> None:
        while True:
            consumer = self._consumer
            assert consumer is not None
            try:
                record = await consumer.getone()
            except KAFKA_ERRORS as exc:
                logger.warning("discovery topic read failed: %s", exc)
                await asyncio.sleep(1.0)  # back off, then read on
                if not getattr(exc, "retriable", False):
                    await self._replace(consumer)
                continue
            try:
                self._on_beat(Heartbeat.from_json(self._opened(record.value)))
            except (ValueError, KeyError, TypeError, InvalidMessage, MessageTooLarge) as exc:
                logger.warning(
                    "dropped a record on %s that is not a heartbeat: %s", self._topic, exc
                )

    async def _replace(self, consumer: AIOKafkaConsumer) -> None:
        # A consumer whose background task died raises the same error on every read (see
        # KafkaTransport._replace_consumer): without a new one, discovery would never hear
        # a heartbeat again and would evict every worker.
        try:
            self._consumer = await self._started_consumer()
        except BusError as exc:
            logger.warning("discovery consumer not replaced yet (the broker away?): %s", exc)
            return
        logger.warning("discovery consumer replaced: the old one could not go on")
        with contextlib.suppress(*KAFKA_ERRORS, OSError):
            await consumer.stop()

    def _opened(self, value: bytes) -> bytes:
        if self._channel is None:
            return value
        return self._channel.open_body(decode_message(value), frozenset({self._topic}))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        if self._follower is not None:
            await self._follower.stop()


class KafkaBackend(BrokerBackend):
    def __init__(self, config: BusConfig) -> None:
        super().__init__(config)
        self._settings = _settings(config)
        # Lag is read every autoscaler interval: on clients kept open, not new ones each time.
        self._lag_reader: KafkaLagReader | None = None

    @property
    def ledger_ttl_s(self) -> float | None:
        return self._settings.ledger_ttl_s

    @property
    def max_consumers(self) -> int | None:
        return self._settings.partitions

    async def settle(self) -> BusConfig:
        return self._config

    def _client_wire(self, client_id: str, *, durable: bool) -> KafkaClientWire:
        return KafkaClientWire(self._config, client_id, durable=durable)

    def _worker_link(
        self,
        pool: PoolConfig,
        hosted: HostedServer,
        ledger: Any,
        *,
        server_id: str,
        capacity: int,
        handles: HandleCache,
    ) -> WorkerLink:
        source = KafkaWorkerSource(
            self._config,
            pool.name,
            hosted,
            ledger,
            capacity=capacity,
            call_timeout_s=pool.timeout_s,
            client_id=server_id,
        )
        return WorkerLink(source, KafkaTopicHeartbeats(source))

    async def heartbeat_feed(self, on_beat: Callable[[Heartbeat], None]) -> HeartbeatFeed | None:
        reader = DiscoveryTopicReader(self._config, on_beat)
        await reader.start()
        return reader

    async def lag(self, handles: HandleCache, pools: Collection[str]) -> LagRows:
        if self._lag_reader is None:
            settings = self._settings
            self._lag_reader = KafkaLagReader(settings.bootstrap, security=settings.security)
        reader = self._lag_reader
        topics = topics_for(self._config)

        async def queued(pool: str, in_flight: int) -> int:
            return await reader.lag(
                group_for(self._config, pool), topics.requests_for_capability(pool)
            )

        return await broker_lag(self._config.name, handles, pools, queued)

    async def close(self) -> None:
        """Close the lag reader's clients; a later :meth:`lag` opens new ones."""
        reader, self._lag_reader = self._lag_reader, None
        if reader is not None:
            await reader.close()
