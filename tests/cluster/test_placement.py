"""A pool's usable nodes and room, from one reading of the cluster (no Ray started)."""

from __future__ import annotations

from typing import Any

from cluster.config import PoolConfig, parse_config
from cluster.placement import ClusterReading

READING = ClusterReading(
    labels={"head": {}, "cpu": {"zone": "a"}, "accel": {"zone": "b", "tier": "accel"}},
    total={
        "head": {"CPU": 0.0},
        "cpu": {"CPU": 4.0},
        "accel": {"CPU": 2.0, "mcp_accel": 2.0},
    },
    free={
        "head": {"CPU": 0.0},
        "cpu": {"CPU": 3.0},
        "accel": {"CPU": 2.0, "mcp_accel": 1.0},
    },
)


def pool(**fields: Any) -> PoolConfig:
    return parse_config({"pools": [{"name": "p", "tools": "m", **fields}]}).pools[0]


def test_a_label_selector_keeps_the_nodes_whose_labels_match_as_rays_scheduler_does() -> None:
    assert READING.usable(pool()) == ["head", "cpu", "accel"]
    assert READING.usable(pool(label_selector={"zone": "b"})) == ["accel"]
    assert READING.usable(pool(label_selector={"zone": "in(a,b)"})) == ["cpu", "accel"]
    assert READING.usable(pool(label_selector={"tier": "!accel"})) == ["head", "cpu"]


def test_room_counts_only_usable_nodes_and_names_them_in_the_reason() -> None:
    assert READING.room(pool(num_cpus=1)) == (
        5,
        "the cluster has 5 CPU(s) free for workers of 1 CPU(s)",
    )
    room, note = READING.room(pool(num_cpus=1, label_selector={"zone": "b"}))
    assert room == 2
    assert note == "nodes with zone=b have 2 CPU(s) free for workers of 1 CPU(s)"
    # Only the accel node has the custom resource, and only one of it is free.
    assert READING.room(pool(num_cpus=1, resources={"mcp_accel": 1}))[0] == 1


def test_a_pool_limited_only_by_labels_fits_anywhere_it_may_run_or_nowhere() -> None:
    assert READING.room(pool(max_workers=6, label_selector={"zone": "a"})) == (6, "")
    assert READING.room(pool(label_selector={"zone": "c"})) == (
        0,
        "no alive node has labels zone=c",
    )


def test_placing_workers_leaves_less_room_for_the_next_pool() -> None:
    accel = pool(resources={"mcp_accel": 1})
    after = READING.after_placing(accel, 1)
    assert after.room(accel)[0] == 0
    assert after.room(pool(num_cpus=1))[0] == 5  # it reserved no CPU
    assert READING.room(accel)[0] == 1  # the reading itself is unchanged


def test_a_pool_no_node_could_ever_hold_is_named_with_what_it_lacks() -> None:
    assert READING.never_fits(pool(num_cpus=4)) is None  # the cpu node, once idle
    assert READING.never_fits(pool(resources={"mcp_accel": 3})) == (
        "no alive node has 3 mcp_accel in all (a worker's reservation)"
    )
    assert READING.never_fits(pool(num_cpus=3, label_selector={"zone": "b"})) == (
        "no alive node with labels zone=b has 3 CPU(s) in all (a worker's reservation)"
    )
    assert (
        READING.never_fits(pool(label_selector={"zone": "c"})) == "no alive node has labels zone=c"
    )
