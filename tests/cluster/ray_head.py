"""A throwaway Ray cluster for CLI tests: prints its address, lives until stdin closes."""

from __future__ import annotations

import sys

from ray.cluster_utils import Cluster


def main() -> int:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False}
    )
    try:
        print(cluster.address, flush=True)
        sys.stdin.read()  # until the test closes our stdin
    finally:
        cluster.shutdown()  # type: ignore[no-untyped-call]
    return 0


if __name__ == "__main__":
    sys.exit(main())
