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
