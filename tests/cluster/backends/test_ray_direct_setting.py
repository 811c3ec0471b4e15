"""``router.direct_calls`` decides whether a Ray client link sends calls directly."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.backends.ray import RayBackend
from cluster.config import parse_config
from transports.frame import Frame


async def _nothing(_: Frame) -> None:
    return None


def _config(**router: Any) -> Any:
    pools = [
        {"name": "kit", "server": "cluster.examples.testkit:server", "labels": {"region": "eu"}}
    ]
    return parse_config({"name": "t", "pools": pools, "router": router})


@pytest.mark.parametrize(
    ("router", "direct"),
    [
        ({}, True),  # the default
        ({"direct_calls": False}, False),
        # Regions route by labels and availability the router alone keeps.
        ({"regions": {"label": "region"}}, False),
    ],
)
async def test_the_router_setting_turns_the_direct_lane_on_or_off(
    router: dict[str, Any], direct: bool
) -> None:
    link = await RayBackend(_config(**router)).open_client(
        "raybus/t/client/x", object(), object(), _nothing, inbox=True
    )
    assert (link.direct is not None) is direct  # type: ignore[attr-defined]
