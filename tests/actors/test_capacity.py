"""How many workers of a shape fit on nodes' free resources (no Ray)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.capacity import describe_shortage, format_amounts, reserve, room_for


def test_workers_fit_node_by_node_not_on_the_clusters_sum() -> None:
    # 0.5 + 0.5 free CPU is one CPU in sum, but no node can run a worker of 1 CPU.
    assert room_for({"a": {"CPU": 0.5}, "b": {"CPU": 0.5}}, {"CPU": 1}) == 0
    assert room_for({"a": {"CPU": 2.5}, "b": {"CPU": 1}}, {"CPU": 1}) == 3


def test_every_resource_of_the_shape_must_fit_on_the_same_node() -> None:
    nodes = {"plain": {"CPU": 8.0}, "accel": {"CPU": 1.0, "accel": 4.0}}
    assert room_for(nodes, {"CPU": 0.5, "accel": 1}) == 2  # the accel node's CPU limits
    assert room_for(nodes, {"accel": 1}) == 4
    assert room_for({"plain": {"CPU": 8.0}}, {"accel": 1}) == 0


def test_fractional_amounts_fit_several_per_unit_and_float_noise_is_ignored() -> None:
    assert room_for({"a": {"CPU": 1.4999999}}, {"CPU": 0.5}) == 3
    assert room_for({"a": {"memory": 2 * 2**30}}, {"memory": 2**30}) == 2


def test_a_shape_that_reserves_nothing_has_no_room_limit() -> None:
    with pytest.raises(ValueError, match="reserves nothing"):
        room_for({"a": {"CPU": 1}}, {"CPU": 0})


def test_reserving_takes_the_workers_resources_from_the_nodes_with_most_room() -> None:
    nodes = {"a": {"CPU": 1.0, "x": 1.0}, "b": {"CPU": 3.0, "x": 3.0}}
    left = reserve(nodes, {"CPU": 1, "x": 1}, 2)
    assert left == {"a": {"CPU": 1.0, "x": 1.0}, "b": {"CPU": 1.0, "x": 1.0}}
    assert nodes["b"]["CPU"] == 3.0  # the reading it came from is untouched
    # More than fits: the rest take nothing (they would wait unscheduled).
    assert room_for(reserve(nodes, {"CPU": 1}, 10), {"CPU": 1}) == 0


def test_the_shortage_reads_as_what_is_free_against_what_a_worker_needs() -> None:
    free = {"a": {"CPU": 1.0, "accel": 0.0}, "b": {"CPU": 0.5}}
    shape = {"CPU": 1.0, "accel": 1.0, "GPU": 0.0}
    assert describe_shortage(free, shape) == (
        "the cluster has 1.5 CPU(s), 0 accel free for workers of 1 CPU(s), 1 accel"
    )
    assert describe_shortage(free, {"CPU": 1}, holder="nodes with zone=a have").startswith(
        "nodes with zone=a have 1.5 CPU(s) free"
    )
    assert format_amounts({"GPU": 0.5, "memory": 2**31}) == "0.5 GPU(s), 2 GiB memory"


_NODE = st.dictionaries(
    st.sampled_from(["CPU", "GPU", "accel"]), st.floats(0, 16, allow_nan=False), max_size=3
)
_SHAPE = st.dictionaries(
    st.sampled_from(["CPU", "GPU", "accel"]),
    st.sampled_from([0.25, 0.5, 1.0, 1.5, 4.0]),
    min_size=1,
    max_size=3,
)


@settings(deadline=None)
@given(st.dictionaries(st.sampled_from("abcd"), _NODE, max_size=4), _SHAPE, st.integers(0, 40))
def test_placing_what_fits_never_overdraws_a_node_and_uses_the_room_up_exactly(
    nodes: dict[str, dict[str, float]], shape: dict[str, float], count: int
) -> None:
    room = room_for(nodes, shape)
    left = reserve(nodes, shape, count)
    for node, resources in left.items():
        for name, amount in resources.items():
            assert amount >= -1e-6, (node, name)
    assert room_for(left, shape) == max(0, room - count)
