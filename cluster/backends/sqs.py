"""SQS between clients and workers (``backend: sqs``).

* Requests go to the queue ``<prefix>requests-<pool>``; every worker of the pool reads
  it, and SQS hands each message to one of them at a time.
* Responses and notifications go to the client's own queue (``reply_to``), created when
  the client connects and deleted when it closes (kept when the client is durable).
* A request is deleted only after its response was sent; while a long tool runs the
  worker keeps extending the message's visibility, so it is not handed out twice. A
  message received ``max_receive_count`` times without being deleted goes to the
  dead-letter queue. Redeliveries are recognised by key in the pool-wide ledger.
* Workers beat to the discovery actor directly (as with Ray).
* The autoscaler's lag is each request queue's depth, less what workers hold.
* Credentials are settled once where the bus is launched (:func:`with_credentials`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any

import botocore.exceptions
import botocore.session
from botocore.credentials import RefreshableCredentials
from pydantic import SecretStr

from actors.worker.admission import admission_for
from actors.worker.hosted_server import HostedServer
from cluster.backends.base import HeartbeatFeed, LagRows, WorkerLink
from cluster.backends.broker import BrokerBackend, broker_lag
from cluster.backends.broker_source import BrokerWorkerSource, one_at_a_time
from cluster.backends.ray import DiscoveryActorHeartbeats
from cluster.backends.sealed import SealedReceiver, channel_for, keys_follower, sealed_send
from cluster.config import BusConfig, PoolConfig, SqsBackendConfig
from cluster.naming import HandleCache
from transports.base import Delivery
from transports.codec import decode_message
from transports.crypto.seal import Direction
from transports.envelope import Envelope
from transports.errors import BusError, BusTimeout, DeliveryUnconfirmed, MessageTooLarge
from transports.frame import Frame
from transports.sqs.transport import SqsConfig, SqsTransport
from transports.sqs.wire import may_have_reached_sqs, response_queue_name

if TYPE_CHECKING:
    from actors.discovery.registry import Heartbeat

__all__ = [
    "LOCAL_DUMMY_CREDENTIAL",
    "MissingCredentials",
    "SqsBackend",
    "SqsClientWire",
    "SqsLagReader",
    "SqsWorkerSource",
    "request_queue",
    "with_credentials",
]

logger = logging.getLogger(__name__)

# What moto (and LocalStack) accept; the same as `raybus services`' own clients use.
LOCAL_DUMMY_CREDENTIAL = "testing"


def _settings(config: BusConfig) -> SqsBackendConfig:
    if config.sqs is None:
        raise ValueError("the bus has no sqs settings")
    return config.sqs


def request_queue(pool: str) -> str:
    return f"requests-{pool}"


def _sqs_config(config: BusConfig, **queues: Any) -> SqsConfig:
    settings = _settings(config)
    prefix = settings.queue_prefix if settings.queue_prefix is not None else f"{config.name}-"
    return SqsConfig(
        endpoint_url=settings.endpoint_url,
        region=settings.region,
        queue_prefix=prefix,
        visibility_timeout_s=settings.visibility_timeout_s,
        max_receive_count=settings.max_receive_count,
        wait_time_seconds=settings.wait_time_seconds,
        fifo=settings.fifo,
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        aws_session_token=settings.aws_session_token,
        aws_profile=settings.aws_profile,
        queue_urls={request_queue(pool): url for pool, url in settings.queue_urls.items()},
        **queues,
    )


class MissingCredentials(BusError):
    """No AWS credentials for a remote SQS endpoint, in the config or where raybus runs."""

    def __init__(self, endpoint: str, profile: str | None = None) -> None:
        super().__init__(endpoint, profile)
        self.endpoint = endpoint
        self.profile = profile

    def __str__(self) -> str:
        if self.profile is not None:
            return (
                f"no AWS credentials for the SQS endpoint {self.endpoint}: the profile "
                f"{self.profile!r} (sqs.aws_profile) is missing or incomplete in the AWS "
                "shared files where raybus starts"
            )
        return (
            f"no AWS credentials for the SQS endpoint {self.endpoint}: set "
            "sqs.aws_access_key_id and sqs.aws_secret_access_key, or AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY (or a profile) where raybus starts"
        )


def with_credentials(settings: SqsBackendConfig) -> SqsBackendConfig:
    """The settings with their credentials settled, once here at the edge.

    Keys in the configuration are used as given. A loopback endpoint (moto from
    ``raybus services up``) without keys or ``aws_profile`` gets moto's dummy keys.
    Otherwise the standard AWS chain is asked here (environment, shared files with
    ``aws_profile``, container or instance role), and what it finds decides:

    * static keys (environment, shared files) are handed to actors explicitly: on a
      cluster they do not see this shell's variables or files;
    * refreshable ones (a container, instance or assumed role, SSO) are not copied,
      since a copy would expire: every process's botocore finds and renews its own.

    Blocking (a profile or instance-metadata lookup): call it off the event loop.

    Raises:
        MissingCredentials: a remote endpoint and no credentials anywhere (or no such
            profile).
    """
    if settings.has_credentials:
        return settings
    if settings.is_local and settings.aws_profile is None:
        dummy = SecretStr(LOCAL_DUMMY_CREDENTIAL)
        return settings.model_copy(
            update={"aws_access_key_id": dummy, "aws_secret_access_key": dummy}
        )
    endpoint = settings.endpoint_url or f"of AWS in {settings.region}"
    try:
        found = botocore.session.Session(profile=settings.aws_profile).get_credentials()
    except botocore.exceptions.ProfileNotFound:
        raise MissingCredentials(endpoint, settings.aws_profile) from None
    frozen = found.get_frozen_credentials() if found is not None else None
    if frozen is None or not frozen.access_key or not frozen.secret_key:
        raise MissingCredentials(endpoint, settings.aws_profile)
    if isinstance(found, RefreshableCredentials):
        logger.info("SQS credentials: %s, renewed where each actor runs", found.method)
        return settings
    return settings.model_copy(
        update={
            "aws_access_key_id": SecretStr(frozen.access_key),
            "aws_secret_access_key": SecretStr(frozen.secret_key),
            "aws_session_token": SecretStr(frozen.token) if frozen.token else None,
            "aws_profile": None,  # settled: a node without the profile must not look for it
        }
    )


class SqsWorkerSource(BrokerWorkerSource):
    """A worker's reader of its pool's request queue."""

    def __init__(
        self,
        config: BusConfig,
        pool: str,
        hosted: HostedServer,
        ledger: Any,
        *,
        capacity: int,
        call_timeout_s: float,
    ) -> None:
        settings = _settings(config)
        self._transport = SqsTransport(_sqs_config(config, receive_queue=request_queue(pool)))

        async def publish(destination: str, body: bytes, envelope: Envelope) -> None:
            # To the caller's queue: a server request's envelope names the worker as its
            # reply_to (the caller answers there), so the envelope cannot be the address.
            await self._transport.send_to(destination, decode_message(body), envelope)

        receiver: SealedReceiver | SqsTransport = self._transport
        send: Callable[[str, bytes, Envelope], Awaitable[None]] = publish
        channel = channel_for(config, f"worker.{pool}", Direction.TO_CLIENT)
        if channel is not None:  # the bus is encrypted end to end: pool is the destination
            follower = keys_follower(config, channel, f"worker {pool}")
            receiver = SealedReceiver(self._transport, channel, frozenset({pool}), follower)
            send = sealed_send(publish, channel)
        super().__init__(
            receiver,
            one_at_a_time(send),
            hosted,
            ledger,
            pool=pool,
            capacity=capacity,
            call_timeout_s=call_timeout_s,
            duplicate_wait_s=settings.duplicate_wait_s,
            admission=admission_for(config.router.regions, pool),
        )


def _may_have_arrived(exc: BusError) -> bool:
    """Whether a failed send may still have been taken by SQS (a timeout, a connection
    lost mid-request, a failure inside SQS), as opposed to a refusal or no connection."""
    if isinstance(exc, BusTimeout):
        return True
    return exc.__cause__ is not None and may_have_reached_sqs(exc.__cause__)


class SqsClientWire:
    """A client's side: requests to pool queues, responses from its own queue.

    ``durable``: the client keeps its id across connections (``BusClient.connect(...,
    durable_id=...)``): its queue outlives it, keeping answers ``response_retention_s``;
    otherwise the queue is deleted on close.
    """

    def __init__(self, config: BusConfig, client_id: str, *, durable: bool = False) -> None:
        self._config = config
        retention_s = _settings(config).response_retention_s if durable else None
        self._receiver = SqsTransport(
            _sqs_config(
                config,
                receive_queue=response_queue_name(client_id),
                delete_receive_queue_on_close=not durable,
                message_retention_s=retention_s,
                keep_visible=False,
            )
        )
        self._senders: dict[str, SqsTransport] = {}

    @property
    def reply_to(self) -> str:
        name = self._receiver.receive_queue_name
        assert name is not None
        return name

    async def start(self) -> None:
        await self._receiver.start()

    def destination_for_pool(self, pool: str) -> str:
        return pool

    async def send(self, pool: str, frames: list[Frame]) -> list[tuple[Frame, BusError]]:
        sender = self._senders.get(pool)
        if sender is None:
            sender = SqsTransport(_sqs_config(self._config, send_queue=request_queue(pool)))
            await sender.start()
            self._senders[pool] = sender
        failed: list[tuple[Frame, BusError]] = []
        for index, frame in enumerate(frames):
            try:
                await sender.send(frame.decode(), frame.envelope)
            except MessageTooLarge as exc:
                failed.append((frame, exc))
            except BusError as exc:
                # This one may have reached SQS; the ones after it were not tried.
                first = DeliveryUnconfirmed(str(exc)) if _may_have_arrived(exc) else exc
                failed.append((frame, first))
                failed.extend((rest, exc) for rest in frames[index + 1 :])
                break
        return failed

    async def next_delivery(self) -> Delivery:
        return await self._receiver.receive()

    def is_connected(self) -> bool:
        return self._receiver.is_connected()

    async def close(self) -> None:
        for sender in self._senders.values():
            await sender.close()
        await self._receiver.close()


class SqsLagReader:
    """Queue depth (visible + in flight) of each pool's request queue, for the autoscaler."""

    def __init__(self, config: BusConfig) -> None:
        self._transport = SqsTransport(_sqs_config(config))
        self._started = False

    async def depth(self, pool: str) -> int:
        if not self._started:
            await self._transport.start()
            self._started = True
        return await self._transport.queue_depth(request_queue(pool))

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self._transport.close()


class SqsBackend(BrokerBackend):
    def __init__(self, config: BusConfig) -> None:
        super().__init__(config)
        self._settings = _settings(config)
        self._lag_reader: SqsLagReader | None = None

    @property
    def ledger_ttl_s(self) -> float | None:
        return self._settings.ledger_ttl_s

    @property
    def max_consumers(self) -> int | None:
        return None

    async def settle(self) -> BusConfig:
        # Blocking (a profile or instance-metadata lookup): off the event loop.
        sqs = await asyncio.to_thread(with_credentials, self._settings)
        return self._config.model_copy(update={"sqs": sqs})

    def _client_wire(self, client_id: str, *, durable: bool) -> SqsClientWire:
        return SqsClientWire(self._config, client_id, durable=durable)

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
        source = SqsWorkerSource(
            self._config,
            pool.name,
            hosted,
            ledger,
            capacity=capacity,
            call_timeout_s=pool.timeout_s,
        )
        return WorkerLink(source, DiscoveryActorHeartbeats(self._config.name, handles))

    async def heartbeat_feed(self, on_beat: Callable[[Heartbeat], None]) -> HeartbeatFeed | None:
        return None  # beats arrive as calls to the discovery actor

    async def lag(self, handles: HandleCache, pools: Collection[str]) -> LagRows:
        if self._lag_reader is None:
            self._lag_reader = SqsLagReader(self._config)
        reader = self._lag_reader

        async def queued(pool: str, in_flight: int) -> int:
            # Depth counts in-flight messages too: subtract what workers hold.
            return max(0, await reader.depth(pool) - in_flight)

        return await broker_lag(self._config.name, handles, pools, queued)

    async def close(self) -> None:
        """Close the lag reader's SQS client; a later :meth:`lag` opens a new one."""
        reader, self._lag_reader = self._lag_reader, None
        if reader is not None:
            await reader.close()
