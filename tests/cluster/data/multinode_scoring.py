"""Score a dataset with ToolCaller on a two-node Ray cluster (``cluster_utils.Cluster``).

Started as a subprocess by ``test_multinode.py``: the test session's own local Ray is
already up in the test process, and a process joins one Ray cluster only. Each node has
one CPU and each ToolCaller actor asks for one, so Ray Data places one actor per node.
Prints one JSON line with what it saw.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pyarrow as pa
import ray
from ray.cluster_utils import Cluster

from cluster.bus import launch_bus, stop_bus
from cluster.config import parse_config
from cluster.data import ToolCaller

ROWS = 400


class NodeTaggingCaller(ToolCaller):
    """ToolCaller that also says which node scored each row."""

    def __call__(self, batch: Any) -> pa.Table:
        scored = super().__call__(batch)
        node = ray.get_runtime_context().get_node_id()
        return scored.append_column("caller_node", pa.array([node] * scored.num_rows))


def score() -> list[dict[str, Any]]:
    # Dispatch only once both actors are up, so that both score rows.
    ray.data.DataContext.get_current().wait_for_min_actors_s = 120
    scored = ray.data.from_items([{"id": i} for i in range(ROWS)]).map_batches(
        NodeTaggingCaller,
        fn_constructor_kwargs={"bus": "multinode-data", "tool": "whoami", "arguments": {}},
        batch_format="pyarrow",
        batch_size=20,
        compute=ray.data.ActorPoolStrategy(size=2),
        num_cpus=1,
    )
    rows: list[dict[str, Any]] = scored.take_all()
    return rows


def exercise() -> dict[str, object]:
    config = parse_config(
        {
            "name": "multinode-data",
            "pools": [
                {"name": "kit", "server": "cluster.examples.testkit:server", "min_workers": 2}
            ],
            "discovery": {"heartbeat_interval_s": 0.2, "ttl_s": 5},
        }
    )
    asyncio.run(launch_bus(config))
    try:
        rows = score()
    finally:
        asyncio.run(stop_bus(config.name))
    answers = [json.loads(r["result"]) for r in rows if r["error"] is None]
    return {
        "nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),  # type: ignore[no-untyped-call]
        "rows": len(rows),
        "answered": len(answers),
        "scored_on": sorted({r["caller_node"] for r in rows}),
        "served_by": sorted({a.get("node") for a in answers}),
    }


def main() -> int:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        print(json.dumps(exercise()))
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]
    return 0


if __name__ == "__main__":
    sys.exit(main())
