"""Every bus configuration under examples/ (``**/bus.yaml``) is a valid configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CONFIGS = sorted(EXAMPLES.glob("**/bus.yaml"))


def test_the_examples_hold_bus_configurations() -> None:
    assert EXAMPLES / "regions" / "bus.yaml" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_an_example_configuration_is_valid(path: Path) -> None:
    load_config(path)


def test_the_regions_example_keeps_each_region_on_its_pool() -> None:
    regions = load_config(EXAMPLES / "regions" / "bus.yaml").router.regions
    assert regions is not None
    assert regions.pool_regions == {"kit-eu": "eu", "kit-us": "us"}
    assert regions.failover == {"us": ["eu"]}


def test_the_triggers_example_calls_echo_with_a_template() -> None:
    (trigger,) = load_config(EXAMPLES / "triggers" / "bus.yaml").triggers
    assert trigger.tool == "echo"
    assert [str(place) for place in trigger.places()] == [
        "kafka:orders",
        "kafka:orders.dlq",
        "kafka:orders.echoed",
    ]
