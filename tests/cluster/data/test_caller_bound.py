"""One batch's calls: run concurrently, never more than ``max_concurrency`` at once.

The logic of ``ToolCaller``'s async side without Ray: a fake client stands in for the bus
(counting the calls running at once), so the bound is shown exactly, not sampled.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import mcp_types as types

from cluster.client import BusClient
from cluster.data.caller import _Calls
from cluster.data.columns import Outcome
from cluster.data.retry import RetryPolicy
from transports.errors import BusErrorCode, CallError

QUICK_RETRY = RetryPolicy(max_attempts=5, initial_backoff_s=0.001, max_backoff_s=0.001)


class CountingClient:
    """Answers ``echo`` after a few loop turns; refuses the calls named in ``refuse`` once."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self.running = 0
        self.most_running = 0
        self.calls = 0
        self.refuse = set(refuse or ())

    async def call_tool(
        self, name: str, arguments: dict[str, Any], *, timeout_s: float
    ) -> types.CallToolResult:
        self.calls += 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            for _ in range(3):  # every other call gets the chance to start meanwhile
                await asyncio.sleep(0)
            if arguments["text"] in self.refuse:
                self.refuse.discard(arguments["text"])
                raise CallError("tools/call", BusErrorCode.OVERLOADED, "overloaded", None)
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=arguments["text"])],
                structured_content={"result": arguments["text"]},
            )
        finally:
            self.running -= 1


def calls_with(client: CountingClient, bound: int) -> _Calls:
    return _Calls(
        cast(BusClient, client),
        {"name": "echo", "annotations": {"readOnlyHint": True}},
        max_concurrency=bound,
        timeout_s=10.0,
        retry=QUICK_RETRY,
    )


async def test_a_batchs_calls_run_concurrently_up_to_the_bound_and_never_past_it() -> None:
    client = CountingClient()
    rows: list[dict[str, Any] | Outcome] = [{"text": f"row {i}"} for i in range(50)]
    outcomes = await calls_with(client, 7).call_all(rows)
    assert client.most_running == 7  # the bound is used...
    assert client.calls == 50  # ...by every row, once
    assert [o.result for o in outcomes] == [f'{{"result": "row {i}"}}' for i in range(50)]


async def test_rows_whose_arguments_failed_take_no_call_and_keep_their_place() -> None:
    client = CountingClient()
    broken = Outcome.failed(None, "the arguments function failed")
    rows: list[dict[str, Any] | Outcome] = [{"text": "a"}, broken, {"text": "c"}]
    outcomes = await calls_with(client, 2).call_all(rows)
    assert client.calls == 2
    assert outcomes[1] is broken
    assert [o.error for o in (outcomes[0], outcomes[2])] == [None, None]


async def test_a_pushed_back_call_is_tried_again_within_the_bound_and_answered() -> None:
    client = CountingClient(refuse={"row 3", "row 4"})
    rows: list[dict[str, Any] | Outcome] = [{"text": f"row {i}"} for i in range(10)]
    outcomes = await calls_with(client, 3).call_all(rows)
    assert [o.error for o in outcomes] == [None] * 10  # pushback slowed them, failed none
    assert client.calls == 12
    assert client.most_running == 3
