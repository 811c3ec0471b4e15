import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_tool_caller_actors_on_both_nodes_of_a_two_node_cluster_score_every_row() -> None:
    # A subprocess: this session's local Ray is already up in the test process.
    completed = subprocess.run(
        [sys.executable, "-m", "tests.cluster.data.multinode_scoring"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["rows"] == report["answered"] == 400
    assert len(report["nodes"]) == 2
    assert report["scored_on"] == report["nodes"]
