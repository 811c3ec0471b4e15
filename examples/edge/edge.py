"""A device that keeps calling its bus while the link comes and goes.

    RAYBUS_TOKEN=edge-demo-token-change-me python examples/edge/edge.py JOURNAL URL

(from the repository root; ``PYTHONPATH=.`` when raybus is not installed).

Each call is journaled in the SQLite file JOURNAL before ``submit`` returns and is sent
when the link is up; stop the gateway (Ctrl-C on ``raybus up``) and start it again while
this runs: nothing is lost, nothing runs twice. Answers this process did not wait for
(it was killed, say) are printed by the next run from ``unclaimed()``.
"""

from __future__ import annotations

import asyncio
import os
import sys

from transports.edge import EdgeClient


async def main(journal: str, url: str) -> None:
    async with EdgeClient.open(journal, url=url, token=os.environ["RAYBUS_TOKEN"]) as edge:
        async for outcome in edge.unclaimed():  # left over from an earlier run
            print("earlier:", outcome.request_id, outcome.result or outcome.error)
            await outcome.claim()
        calls = [await edge.submit("echo", {"text": f"position {i}"}) for i in range(10)]
        print(f"journaled {len(calls)} calls")
        for call in calls:
            result = await call.result()  # waits through outages
            print(call.request_id, result["content"][0]["text"])
        status = edge.link
        print(f"link {status.state}; {status.unanswered} calls still unanswered")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
