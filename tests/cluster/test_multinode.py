import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_one_pool_and_the_gateway_spread_over_two_nodes_and_all_serve() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "tests.cluster.multinode_check"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["answered"] == 100
    assert len(report["nodes"]) == 2
    assert report["served_by"] == report["nodes"]
    # One gateway replica per node, each serving calls end to end over HTTP.
    assert sorted(report["gateway_answered"]) == report["nodes"]
    assert set(report["gateway_answered"].values()) == {20}
    # A killed replica is replaced on its own node and serves again.
    assert report["replaced"] == [[report["killed"], 20]]
