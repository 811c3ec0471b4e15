import pytest

from tests.cluster.bus_helpers import isolated_report

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_one_pool_and_the_gateway_spread_over_two_nodes_and_all_serve() -> None:
    report = isolated_report("tests.cluster.multinode_check")
    assert report["answered"] == 100
    assert len(report["nodes"]) == 2
    assert report["served_by"] == report["nodes"]
    # One gateway replica per node, each serving calls end to end over HTTP.
    assert sorted(report["gateway_answered"]) == report["nodes"]
    assert set(report["gateway_answered"].values()) == {20}
    # A killed replica is replaced on its own node and serves again.
    assert report["replaced"] == [[report["killed"], 20]]


def test_pools_needing_a_resource_or_a_label_run_only_where_it_is_and_grow_no_further() -> None:
    report = isolated_report("tests.cluster.resources_check")
    accel_node = report["accel_node"]
    # Every worker of both pools sits on the one node with `accel` and `zone=b`.
    assert report["workers_at_start"] == {"accel": [accel_node], "zoned": [accel_node] * 2}
    assert set(report["workers_after_burst"]["accel"]) == {accel_node}
    # The node holds 2 `accel`: the burst wanted 20 workers, the pool stopped at 2.
    assert report["highest_target"] == 2
    assert len(report["workers_after_burst"]["accel"]) == 2
    assert "accel free for workers of 1 accel" in report["capped_reason"]
    assert report["answered"] == 40
    assert report["status_row"] == {"resources": {"accel": 1.0}, "env": []}
