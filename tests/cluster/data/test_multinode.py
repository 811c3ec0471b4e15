import pytest

from tests.cluster.bus_helpers import isolated_report

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_tool_caller_actors_on_both_nodes_of_a_two_node_cluster_score_every_row() -> None:
    report = isolated_report("tests.cluster.data.multinode_scoring")
    assert report["rows"] == report["answered"] == 400
    assert len(report["nodes"]) == 2
    assert report["scored_on"] == report["nodes"]
