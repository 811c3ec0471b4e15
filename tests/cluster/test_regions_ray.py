"""Region-aware routing on a real local Ray (README "Regions"), one machine.

Four pools host the same server (:mod:`tests.cluster.regional_server`), each labelled
with its own region and writing the keys it runs to its own file, so the files prove
where every call ran. ``ch`` and ``uk`` are made unavailable for real: their worker
crashes until the pool's breaker opens. ``router.regions.failover`` lets ``uk`` run in
``us``; ``ch`` has none.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from cluster.bus import bus_status
from cluster.client import BusClient, CallError
from tests.cluster.bus_helpers import bus_config, running_bus

pytestmark = [pytest.mark.ray, pytest.mark.asyncio(loop_scope="module")]

REGIONS = ("eu", "us", "ch", "uk")


@dataclass
class Regional:
    bus: BusClient
    files: dict[str, Path]

    def runs(self) -> dict[str, list[str]]:
        """Per region, the keys its pool ran (in order)."""
        return {r: p.read_text().split() if p.exists() else [] for r, p in self.files.items()}

    async def labelled(self, region: str) -> BusClient:
        """A client of this bus pinned to ``region``."""
        return await BusClient.connect(self.bus.bus, labels={"region": region})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def regional(
    ray_session: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Regional]:
    folder = tmp_path_factory.mktemp("regions")
    files = {region: folder / f"{region}.runs" for region in REGIONS}
    pools = [
        {
            "name": f"calc-{region}",
            "server": "tests.cluster.regional_server:server",
            "labels": {"region": region},
            "env": {"RAYBUS_TEST_RUNS": str(files[region])},
            "min_workers": 1,
            "max_workers": 1,
            "warm_spares": 0,
        }
        for region in REGIONS
    ]
    router = {
        "regions": {"failover": {"uk": ["us"]}},
        # One crash opens a pool's breaker for the rest of the module, even in the pool
        # that owned the unlabelled test's 10 calls (which pool owns them depends on which
        # registered first): 1 failure in at most 12 calls is over 5 %.
        "breaker": {
            "minimum_calls": 2,
            "failure_rate_threshold": 0.05,
            "window_s": 600,
            "open_cooldown_s": 600,
        },
    }
    async with running_bus(bus_config(pools, router=router)) as client:
        yield Regional(client, files)


async def call(client: BusClient, key: str) -> str:
    result = await client.call_tool("append", {"key": key}, timeout_s=60)
    assert result.structured_content == {"result": key}
    return key


async def test_calls_labelled_eu_run_only_on_the_eu_pool(regional: Regional) -> None:
    eu = await regional.labelled("eu")
    try:
        keys = await asyncio.gather(*(call(eu, f"eu-{i}") for i in range(50)))
    finally:
        await eu.close()
    runs = regional.runs()
    assert sorted(runs["eu"]) == sorted(keys)
    pools = (await bus_status(regional.bus.bus))["pools"]  # what `raybus status` shows
    assert {pool: row["labels"] for pool, row in pools.items()} == {
        f"calc-{region}": {"region": region} for region in REGIONS
    }
    assert runs["us"] == runs["ch"] == runs["uk"] == []
    # A call's own labels choose too (on a client without any).
    await call_with_labels(regional.bus, "us-1", "us")
    assert regional.runs()["us"] == ["us-1"]


async def call_with_labels(client: BusClient, key: str, region: str) -> None:
    result = await client.call_tool("append", {"key": key}, timeout_s=60, labels={"region": region})
    assert result.structured_content == {"result": key}


async def test_a_region_no_pool_carries_is_refused_with_1010(regional: Regional) -> None:
    before = regional.runs()
    with pytest.raises(CallError) as refused:
        await call_with_labels(regional.bus, "ap-1", "ap")
    assert refused.value.code == 1010
    assert refused.value.data == {"region": "ap", "tool": "append", "reason": "not_offered"}
    assert regional.runs() == before


async def test_unlabelled_calls_keep_todays_owner(regional: Regional) -> None:
    keys = await asyncio.gather(*(call(regional.bus, f"plain-{i}") for i in range(10)))
    ran = {region: [k for k in runs if k in keys] for region, runs in regional.runs().items()}
    # One pool (the name's owner: the first to offer it) runs them all.
    assert sorted(len(found) for found in ran.values()) == [0, 0, 0, 10]


async def test_an_unavailable_region_without_failover_fails_closed(regional: Regional) -> None:
    ch = await regional.labelled("ch")
    try:
        await call(ch, "ch-1")
        await open_the_breaker(ch)
        before = regional.runs()
        with pytest.raises(CallError) as refused:
            await call(ch, "ch-2")
    finally:
        await ch.close()
    assert refused.value.code == 1010
    assert refused.value.data == {"region": "ch", "tool": "append", "reason": "unavailable"}
    assert regional.runs() == before
    assert labelled_runs(regional, "ch") == ["ch-1"]


def labelled_runs(regional: Regional, region: str) -> list[str]:
    """The runs in ``region``'s pool of calls labelled with it (the pool may also own the
    unlabelled test's calls: which pool does depends on which registered first)."""
    return [key for key in regional.runs()[region] if key.startswith(f"{region}-")]


async def open_the_breaker(client: BusClient) -> None:
    """Crash the region's worker once: 1 failed call of its at most 12 opens its breaker
    (minimum_calls 2, failure rate 0.05), which stays open (cooldown 600 s).
    Only once: with failover, a second crash would go to the failover region's pool."""
    with pytest.raises(CallError) as failed:
        await client.call_tool("crash", {"key": "x"}, timeout_s=120)
    assert failed.value.code == 1004  # the worker was lost mid-call


async def test_an_unavailable_region_with_failover_runs_in_the_failover_region(
    regional: Regional,
) -> None:
    uk = await regional.labelled("uk")
    try:
        await call(uk, "uk-1")
        await open_the_breaker(uk)
        await call(uk, "uk-2")
    finally:
        await uk.close()
    runs = regional.runs()
    assert labelled_runs(regional, "uk") == ["uk-1"]
    assert runs["us"][-1] == "uk-2"
