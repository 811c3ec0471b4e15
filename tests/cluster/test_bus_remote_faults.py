"""A remote pool whose upstream is down, dies or hangs, on a real local Ray.

Every outcome is a clear JSON-RPC error within a bound: the start names the pool and the
URL; calls in flight end with ``UPSTREAM_FAILED``; a hung upstream ends calls at their
deadline, then the session is given up; the pool's breaker opens and refuses calls at
once; and the pool serves again once the upstream is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from cluster.bus import PoolStartFailed, bus_status, launch_bus
from cluster.client import BusClient, CallError
from tests.cluster.bus_helpers import bus_config, running_bus
from tests.upstream_process import Upstream, free_port, running_upstream
from transports.errors import BusErrorCode

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]

# Bounds that stop a hang on a cold, loaded 2-core machine; they measure nothing.
WAIT_S = 120.0
POOL_TIMEOUT_S = 3.0
# Small enough that a few failed calls open it, short enough that a test sees it close.
BREAKER = {"minimum_calls": 4, "window_s": 60, "open_cooldown_s": 2, "probe_timeout_s": 10}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def upstream() -> AsyncIterator[Upstream]:
    async with running_upstream() as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bus(ray_session: None, upstream: Upstream) -> AsyncIterator[BusClient]:
    pool = {
        "name": "remote",
        "url": upstream.url,
        "min_workers": 1,
        "max_workers": 1,
        "warm_spares": 0,
        "timeout_s": POOL_TIMEOUT_S,
    }
    async with running_bus(bus_config([pool], router={"breaker": BREAKER})) as client:
        yield client


async def outcome(bus: BusClient, text: str = "ping") -> int | None:
    """The call's error code (None: it succeeded); the call may never hang."""
    try:
        async with asyncio.timeout(POOL_TIMEOUT_S + 30):
            await bus.call_tool("echo", {"text": text}, timeout_s=30)
    except CallError as exc:
        return exc.code
    return None


async def until_breaker_opens(bus: BusClient) -> list[int | None]:
    codes: list[int | None] = []
    async with asyncio.timeout(WAIT_S):
        while not codes or codes[-1] != BusErrorCode.CIRCUIT_OPEN:
            codes.append(await outcome(bus))
    return codes


async def until_served_again(bus: BusClient) -> None:
    async with asyncio.timeout(WAIT_S):
        while await outcome(bus, "back") is not None:  # noqa: ASYNC110 - state in actors
            await asyncio.sleep(0.2)  # the breaker's cooldown and the reconnect backoff


async def test_an_upstream_down_at_start_fails_the_start_naming_the_pool_and_url(
    ray_session: None,
) -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    config = bus_config([{"name": "down", "url": url, "warm_spares": 0}])
    with pytest.raises(PoolStartFailed) as caught:
        async with asyncio.timeout(WAIT_S):
            await launch_bus(config)
    message = str(caught.value)
    assert message.startswith("pool 'down' failed to start: ")
    assert f"cannot connect to upstream {url}" in message
    assert "\n" not in message


async def test_an_upstream_killed_mid_call_fails_calls_opens_the_breaker_and_recovers(
    bus: BusClient, upstream: Upstream
) -> None:
    assert await outcome(bus) is None
    in_flight = asyncio.create_task(bus.call_tool("nap", {"seconds": 600}, timeout_s=60))
    async with asyncio.timeout(WAIT_S):
        while (await bus_status(bus.bus))["pools"]["remote"]["in_flight"] != 1:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # polling the router from outside
    await upstream.kill()
    with pytest.raises(CallError) as caught:
        async with asyncio.timeout(WAIT_S):
            await in_flight
    # Killed while a call the pool would end at 3 s ran: the kill ends it, naming the URL.
    assert caught.value.code == BusErrorCode.UPSTREAM_FAILED, caught.value
    assert upstream.url in caught.value.message
    codes = await until_breaker_opens(bus)
    assert set(codes[:-1]) <= {BusErrorCode.UPSTREAM_FAILED}, codes
    await upstream.start()
    await until_served_again(bus)


async def test_a_hung_upstream_ends_calls_at_their_deadline_then_the_breaker_opens(
    bus: BusClient, upstream: Upstream
) -> None:
    await until_served_again(bus)
    upstream.freeze()
    try:
        assert await outcome(bus) == BusErrorCode.DEADLINE_EXCEEDED
        codes = await until_breaker_opens(bus)
        allowed = {BusErrorCode.DEADLINE_EXCEEDED, BusErrorCode.UPSTREAM_FAILED}
        assert set(codes[:-1]) <= allowed, codes
        assert BusErrorCode.UPSTREAM_FAILED in codes, codes
    finally:
        upstream.thaw()
    await until_served_again(bus)
