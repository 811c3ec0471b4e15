"""A child process that writes to an edge journal and dies with ``os._exit`` (no close).

``python -m tests.transports.edge.journal_child PATH MODE COUNT``:

* ``inside-batch``: COUNT submits in one loop turn; the process dies inside the batch's
  transaction, after its rows were inserted and before the commit.
* ``after-batch``: the same COUNT submits; dies right after they were committed.
* ``sending``: COUNT submits, each marked ``sending`` (as before a POST), then dies.
"""

from __future__ import annotations

import asyncio
import os
import sys

from transports.edge.journal import Journal, Submission


async def main(path: str, mode: str, count: int) -> None:
    journal = await Journal.open(path)
    if mode == "inside-batch":
        db = journal._db

        async def die_before_commit() -> None:
            os._exit(17)

        db.commit = die_before_commit  # type: ignore[method-assign]
    submits = [journal.enqueue(Submission("append", {"key": f"k{i}"})) for i in range(count)]
    ids = await asyncio.gather(*submits)
    if mode == "sending":
        for request_id in ids:
            await journal.mark_sending(request_id)
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
