"""Launch a bus from a driver whose Ray job carries environment variables (its
``runtime_env``), as a user puts ``RAYBUS_OTEL_EXPORTER`` on a running cluster: every
actor of the bus - router, supervisor, workers - then starts with them.

``python -m tests.cluster.traced_launch ADDRESS CONFIG_JSON ENV_JSON`` joins the Ray at
ADDRESS (a test's session Ray: one local Ray at a time), starts the bus and prints
``ready``. The bus's actors are detached: they outlive this driver, and the test that
ran it stops the bus.
"""

from __future__ import annotations

import asyncio
import json
import sys

import ray

from cluster.bus import launch_bus
from cluster.config import parse_config
from cluster.naming import NAMESPACE


def main() -> None:
    address, config_json, env_json = sys.argv[1:4]
    ray.init(
        address=address,
        namespace=NAMESPACE,
        log_to_driver=False,
        runtime_env={"env_vars": json.loads(env_json)},
    )
    asyncio.run(launch_bus(parse_config(json.loads(config_json))))
    print("ready", flush=True)


if __name__ == "__main__":
    main()
