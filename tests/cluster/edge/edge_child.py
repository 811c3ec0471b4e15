"""A device process that journals calls while the bus is unreachable, then dies.

``python -m tests.cluster.edge.edge_child JOURNAL URL TOKEN RUNS_FILE COUNT``: opens the
edge client, submits COUNT ``append`` calls (keys ``r000``...), prints their request ids
as one JSON line, and ends with ``os._exit`` - no close, no clean flag - as a device
losing power would.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from transports.edge import EdgeClient


async def main(journal: str, url: str, token: str, runs: str, count: int) -> None:
    edge = await EdgeClient.open(journal, url=url, token=token)
    submits = (edge.submit("append", {"key": f"r{i:03d}", "path": runs}) for i in range(count))
    calls = await asyncio.gather(*submits)
    print(json.dumps([call.request_id for call in calls]), flush=True)
    os._exit(0)


if __name__ == "__main__":
    journal, url, token, runs, count = sys.argv[1:6]
    asyncio.run(main(journal, url, token, runs, int(count)))
