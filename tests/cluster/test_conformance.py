"""The official MCP conformance suite, both eras, through `raybus up` and the bus.

Two servers are served from a pool of two workers, so every scenario crosses router,
worker and endpoint actors, and 2026-07-28 request state is opened by whichever replica
the retry lands on:

- python-sdk's own fixture server (``mcp_everything_server``), unmodified, taken from the
  installed SDK's source distribution: conformance on a server we did not write;
- our fixture (``cluster.examples.conformance``), which mirrors its tool set while keeping
  every piece of state request-scoped.

The SDK's server also runs through the Kafka and SQS backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.cluster.bus_helpers import bus_config, running_gateway
from tests.conformance.everything import SERVER_OBJECT, everything_server_dir
from tests.conformance.runner import run_suite

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# Checks the pinned suite (0.2.0-alpha.12) runs against a server with every fixture.
CHECKS = {"2025-11-25": 84, "2026-07-28": 152}
ERAS = sorted(CHECKS)
# The suite deliberately sends arguments its fixture tools' schemas reject and expects the
# server to decide; the gateway's own check would answer first.
GATEWAY = {"policy": {"validate_arguments": False}}
module_fixture = pytest_asyncio.fixture(scope="module", loop_scope="module")


@pytest.fixture(scope="module")
def everything_pool() -> dict[str, Any]:
    return {
        "name": "everything",
        "server": SERVER_OBJECT,
        "min_workers": 2,
        # One machine: the workers find the package where the driver put it.
        "runtime_env": {"env_vars": {"PYTHONPATH": str(everything_server_dir())}},
    }


@module_fixture
async def ours_over_ray(ray_session: None, suite: None) -> AsyncIterator[str]:
    pool = {"name": "conformance", "server": "cluster.examples.conformance:server"}
    async with running_gateway(bus_config([{**pool, "min_workers": 2}], gateway=GATEWAY)) as url:
        yield url


@module_fixture
async def sdk_over_ray(
    ray_session: None, suite: None, everything_pool: dict[str, Any]
) -> AsyncIterator[str]:
    async with running_gateway(bus_config([everything_pool], gateway=GATEWAY)) as url:
        yield url


@module_fixture
async def sdk_over_kafka(
    ray_session: None, suite: None, everything_pool: dict[str, Any], kafka_bootstrap: str
) -> AsyncIterator[str]:
    kafka = {"bootstrap": kafka_bootstrap, "partitions": 4}
    config = bus_config([everything_pool], gateway=GATEWAY, backend="kafka", kafka=kafka)
    async with running_gateway(config) as url:
        yield url


@module_fixture
async def sdk_over_sqs(
    ray_session: None, suite: None, everything_pool: dict[str, Any], sqs_endpoint: str
) -> AsyncIterator[str]:
    sqs = {
        "endpoint_url": sqs_endpoint,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    config = bus_config([everything_pool], gateway=GATEWAY, backend="sqs", sqs=sqs)
    async with running_gateway(config) as url:
        yield url


async def passes_every_check(url: str, era: str) -> None:
    passed, failed, output = await asyncio.to_thread(run_suite, url, era, 900)
    assert failed == 0, output[-8000:]  # the summary, then each failed check
    assert passed >= CHECKS[era], output[-6000:]


@pytest.mark.parametrize("era", ERAS)
async def test_the_sdk_fixture_server_passes_the_suite_through_the_bus(
    sdk_over_ray: str, era: str
) -> None:
    await passes_every_check(sdk_over_ray, era)


@pytest.mark.parametrize("era", ERAS)
async def test_our_fixture_server_passes_the_suite_through_the_bus(
    ours_over_ray: str, era: str
) -> None:
    await passes_every_check(ours_over_ray, era)


@pytest.mark.kafka
@pytest.mark.parametrize("era", ERAS)
async def test_the_sdk_fixture_server_passes_the_suite_through_kafka(
    sdk_over_kafka: str, era: str
) -> None:
    await passes_every_check(sdk_over_kafka, era)


@pytest.mark.sqs
@pytest.mark.parametrize("era", ERAS)
async def test_the_sdk_fixture_server_passes_the_suite_through_sqs(
    sdk_over_sqs: str, era: str
) -> None:
    await passes_every_check(sdk_over_sqs, era)
