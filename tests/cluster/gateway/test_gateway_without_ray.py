"""The gateway over a fake bus: the MCP side end to end, in memory, with no Ray.

The official SDK client talks to the gateway's SDK server in process; the bus behind it
is ``fake_bus`` (the gateway depends on the small ``Bus`` protocol, not on BusClient).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import mcp
import pytest
from mcp.shared.exceptions import MCPError

from actors.discovery.catalog import Kind
from cluster.gateway.policy.chain import PolicyConfig
from cluster.gateway.server import Gateway
from tests.cluster.gateway.fake_bus import fake_bus
from tests.waiting import wait_until
from transports.errors import BusErrorCode


async def test_lists_come_from_the_bus_catalogs_and_calls_go_through_one_session() -> None:
    bus = fake_bus()
    # The handshake era keeps one MCP session, so one bus session serves both calls.
    async with mcp.Client(Gateway(bus).server, mode="legacy") as client:
        listed = await client.list_tools()
        first = await client.call_tool("echo", {"text": "one"})
        second = await client.call_tool("echo", {"text": "two"})
    assert [t.name for t in listed.tools] == ["echo", "count", "overloaded"]
    assert [c.content[0].text for c in (first, second)] == ["one", "two"]  # type: ignore[union-attr]
    assert [(c.method, c.name, c.params["arguments"]) for c in bus.calls] == [
        ("tools/call", "echo", {"text": "one"}),
        ("tools/call", "echo", {"text": "two"}),
    ]
    assert [s.principal for s in bus.sessions] == ["anonymous"]


async def test_progress_a_worker_reports_reaches_the_caller_in_order() -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with mcp.Client(Gateway(fake_bus()).server, mode="legacy") as client:
        result = await client.call_tool("count", {"steps": 3}, progress_callback=on_progress)
    assert result.content[0].text == "counted 3"  # type: ignore[union-attr]
    assert seen == [1, 2, 3]


async def test_each_stateless_era_request_gets_its_own_bus_session_that_is_forgotten() -> None:
    bus = fake_bus()
    async with mcp.Client(Gateway(bus).server) as client:
        await client.call_tool("echo", {"text": "one"})
        await client.call_tool("echo", {"text": "two"})
    assert len(bus.sessions) == 2
    # Freed with their connection objects (weakref.finalize), which cycles may hold.
    await wait_until(lambda: gc.collect() >= 0 and all(s.forgotten for s in bus.sessions))


async def test_a_bus_error_reaches_the_client_with_its_code_and_data() -> None:
    async with mcp.Client(Gateway(fake_bus()).server) as client:
        with pytest.raises(MCPError) as refused:
            await client.call_tool("overloaded", {})
    assert refused.value.error.code == BusErrorCode.OVERLOADED
    assert refused.value.error.data == {"retryAfterSeconds": 1}


async def test_an_allow_list_hides_and_refuses_what_it_does_not_cover_before_the_bus() -> None:
    bus = fake_bus()
    policy = PolicyConfig.model_validate({"allow": {"anonymous": ["echo"]}})
    async with mcp.Client(Gateway(bus, policy=policy).server) as client:
        listed = await client.list_tools()
        with pytest.raises(MCPError) as refused:
            await client.call_tool("count", {"steps": 1})
        allowed = await client.call_tool("echo", {"text": "yes"})
    assert [t.name for t in listed.tools] == ["echo"]
    assert refused.value.error.code == BusErrorCode.FORBIDDEN
    assert allowed.content[0].text == "yes"  # type: ignore[union-attr]
    assert [c.name for c in bus.calls] == ["echo"]


class _CountedCatalogs:
    """Wraps a fake bus's ``catalogs``: counts reads, holds each until released."""

    def __init__(self, bus: Any) -> None:
        self.inner, self.reads, self.release = bus.catalogs, 0, asyncio.Event()
        bus.catalogs = self.read

    async def read(self) -> Any:
        self.reads += 1
        await self.release.wait()
        return await self.inner()


async def test_requests_finding_the_catalogs_stale_share_one_read() -> None:
    bus = fake_bus()
    gateway = Gateway(bus)
    counted = _CountedCatalogs(bus)
    waiting = [asyncio.ensure_future(gateway.tools_by_name()) for _ in range(20)]
    await wait_until(lambda: counted.reads == 1, timeout_s=10)
    waiting[0].cancel()  # one caller giving up does not fail the read for the others
    counted.release.set()
    indexes = await asyncio.wait_for(asyncio.gather(*waiting[1:]), timeout=10)
    assert counted.reads == 1
    assert all("echo" in index for index in indexes)


async def test_a_list_change_during_a_read_makes_the_next_request_read_again() -> None:
    bus = fake_bus()
    gateway = Gateway(bus)
    await gateway.catalogs()  # primes the change counters' baseline below
    await gateway._relay_list_changes()
    counted = _CountedCatalogs(bus)
    gateway._catalogs_at = 0.0  # stale: the next request reads
    reading = asyncio.ensure_future(gateway.catalogs())
    await wait_until(lambda: counted.reads == 1, timeout_s=10)
    bus.changes[Kind.TOOL] = 1  # a pool changed its tools while that read was under way
    await gateway._relay_list_changes()
    counted.release.set()
    await asyncio.wait_for(reading, timeout=10)
    await asyncio.wait_for(gateway.catalogs(), timeout=10)
    assert counted.reads == 2  # what the first read returned may predate the change
    await asyncio.wait_for(gateway.catalogs(), timeout=10)
    assert counted.reads == 2  # fresh now, within the TTL
