"""The official MCP conformance suite, both eras, through `raybus up` and the bus.

The gateway serves the suite's fixture server (``cluster.examples.conformance``) from a
pool of two workers, so every scenario crosses router, worker and endpoint actors, and
2026-07-28 request state is opened by whichever replica the retry lands on.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.actors.bus_helpers import bus_config, running_gateway
from tests.conformance_run import run_suite

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(shutil.which("npm") is None, reason="the suite installs from npm"),
]

TOOL = Path(__file__).resolve().parents[2].parent / "shared" / "tools" / "conformance"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway_url(ray_session: None) -> AsyncIterator[str]:
    # CI clones next to shared/: a missing tool is a broken checkout, not a reason to skip.
    assert TOOL.exists(), f"the conformance tool is not at {TOOL}"
    config = bus_config(
        [
            {
                "name": "conformance",
                "server": "cluster.examples.conformance:server",
                "min_workers": 2,
            }
        ],
        # The suite deliberately sends arguments its fixture tools' schemas reject and
        # expects the server to decide; the gateway's own check would answer first.
        gateway={"policy": {"validate_arguments": False}},
    )
    async with running_gateway(config) as url:
        yield url


@pytest.mark.parametrize(("era", "at_least"), [("2025-11-25", 84), ("2026-07-28", 152)])
async def test_the_conformance_suite_passes_through_the_bus(
    gateway_url: str, era: str, at_least: int
) -> None:
    passed, failed, output = await asyncio.to_thread(run_suite, gateway_url, era, 900)
    assert failed == 0, output[-6000:]
    assert passed >= at_least, output[-6000:]
