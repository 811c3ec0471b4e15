"""A bus on Kafka or SQS for the broker fault tests, and what they read from it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cluster.backends.base import Backend, backend_for
from cluster.config import BusConfig
from cluster.naming import HandleCache
from tests.cluster.bus_helpers import bus_config
from transports.errors import BusTimeout

KIT_SERVER = "cluster.examples.testkit:server"


@dataclass(frozen=True)
class Broker:
    """Which broker a test runs on and where it listens (127.0.0.1)."""

    kind: str  # "kafka" or "sqs"
    address: str

    def settings(self, **extra: Any) -> dict[str, Any]:
        if self.kind == "kafka":
            return {"kafka": {"bootstrap": self.address, "partitions": 2, **extra}}
        return {
            "sqs": {
                "endpoint_url": self.address,
                "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing",
                **extra,
            }
        }


BROKERS = [
    pytest.param("kafka", marks=pytest.mark.kafka, id="kafka"),
    pytest.param("sqs", marks=pytest.mark.sqs, id="sqs"),
]


def broker_of(request: pytest.FixtureRequest) -> Broker:
    """The broker a test parametrized over :data:`BROKERS` runs on (started lazily)."""
    kind: str = request.param
    fixture = "kafka_bootstrap" if kind == "kafka" else "sqs_endpoint"
    return Broker(kind, request.getfixturevalue(fixture))


def broker_bus(broker: Broker, pool: dict[str, Any], **extra: Any) -> BusConfig:
    """A uniquely named bus with one pool named ``kit`` on ``broker``."""
    return bus_config([{"name": "kit", **pool}], backend=broker.kind, **broker.settings(), **extra)


class PoolLoad:
    """The pool's lag as the autoscaler reads it: queued in the broker, in flight on workers."""

    def __init__(self, config: BusConfig) -> None:
        self._backend: Backend = backend_for(config)
        self._handles = HandleCache()

    async def read(self) -> tuple[int, int]:
        try:
            rows = await self._backend.lag(self._handles, ["kit"])
        finally:
            await self._backend.close()  # a one-off reading: no client left open after it
        return rows["kit"]["queued"], rows["kit"]["in_flight"]


async def eventually(probe: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    """Wait (bounded) until an async condition on the bus holds."""
    async with asyncio.timeout(timeout_s):
        while not await probe():  # noqa: ASYNC110 - the condition is the bus's state
            await asyncio.sleep(0.1)


def lines(path: Path) -> list[str]:
    """The tokens a ``record`` tool wrote (one run each)."""
    return path.read_text().split() if path.exists() else []


def echoed(result: Any) -> Any:
    """What a testkit tool answered, from its structured content."""
    return result.structured_content["result"]


async def within_deadline(call: Awaitable[Any]) -> Any:
    """``call``, with the client's own timeout turned into "no outcome" for the history."""
    try:
        return await call
    except BusTimeout as exc:
        raise TimeoutError(str(exc)) from exc
