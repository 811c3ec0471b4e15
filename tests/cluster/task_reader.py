"""A driver of its own: re-opens a task by id and prints its outcome as one JSON line.

``python -m tests.cluster.task_reader GCS_ADDRESS BUS TASK_ID TIMEOUT_S``: what a second
process of a user (a notebook, a batch job) does with a task id another one started
(issue 21: "a handle can be re-opened by id from another process").
"""

from __future__ import annotations

import asyncio
import json
import sys

import ray

from cluster.client import BusClient


async def read(bus: str, task_id: str, timeout_s: float) -> dict[str, str]:
    client = await BusClient.connect(bus)
    try:
        handle = await client.open_task(task_id)
        result = await handle.result(timeout_s=timeout_s)
        text = result.content[0].text  # type: ignore[union-attr]
        return {"status": str((await handle.status()).status), "text": text}
    finally:
        await client.close()


if __name__ == "__main__":
    address, bus, task_id, timeout_s = sys.argv[1:5]
    ray.init(address=address, log_to_driver=False)
    print(json.dumps(asyncio.run(read(bus, task_id, float(timeout_s)))))
