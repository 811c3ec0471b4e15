"""The official-SDK server every ``raybus bench`` workload calls, on both sides.

One ``MCPServer`` object, hosted by raybus by import path (``benchmarks.server:server``)
and served directly by the SDK (``benchmarks.sdk_http``) or called in-process
(``mcp.Client(server)``), so each comparison runs the same tool code.

- ``echo``: the cheapest tool; what is measured is the path around it. It is read-only,
  and says so (``readOnlyHint``), as a real lookup would.
- ``echo_once``: the same tool without that promise. On a broker backend a call to it
  passes the exactly-once ledger (B6/B7 measure both paths).
- ``spin``: ``ms`` of CPU work on the calling thread, counted with ``thread_time`` so a
  contended core makes it take longer in wall time, never do less work.
- ``nap``: waits ``seconds`` without CPU (a call that holds a worker slot, not a core).
- ``hold``: waits (without CPU) until a gate file exists, so thousands of calls stay in
  flight together for as long as the bench needs and end together when it creates the
  file. One poller per gate per process, however many calls wait on it (a bench runs on
  one machine, so a file is a gate every process sees).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

__all__ = ["server", "waiting_at"]

server = MCPServer("raybus-bench")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def echo_once(text: str) -> str:
    """Return the text unchanged (declared as a tool that may change state)."""
    return text


@server.tool()
def spin(ms: float) -> float:
    """Burn ``ms`` milliseconds of CPU on this thread; returns the CPU ms spent."""
    started = time.thread_time()
    deadline = started + ms / 1000
    while time.thread_time() < deadline:
        pass
    return (time.thread_time() - started) * 1000


@server.tool()
async def nap(seconds: float) -> float:
    """Sleep ``seconds``; returns them."""
    await asyncio.sleep(seconds)
    return seconds


_GATE_POLL_S = 0.02
_gates: dict[str, asyncio.Task[None]] = {}
_waiting: dict[str, int] = {}


@server.tool()
async def hold(gate: str, timeout_s: float = 600.0) -> float:
    """Wait until the file ``gate`` exists, at most ``timeout_s``; returns seconds waited.

    While calls wait, ``<gate>.<pid>.waiting`` holds how many wait in this process, so
    the bench knows when they all really run (not merely were handed to a worker).
    """
    started = time.monotonic()
    _waiting[gate] = _waiting.get(gate, 0) + 1
    watcher = _gates.get(gate)
    if watcher is None:
        watcher = _gates[gate] = asyncio.get_running_loop().create_task(_watch(gate, timeout_s))
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(watcher)
    except TimeoutError:
        pass
    finally:
        _waiting[gate] -= 1
    return time.monotonic() - started


async def _watch(gate: str, timeout_s: float) -> None:
    give_up = time.monotonic() + timeout_s
    count_file = Path(f"{gate}.{os.getpid()}.waiting")
    written = -1
    # Polling: a file has no event to await (one stat per period, for every waiting call).
    while not os.path.exists(gate) and time.monotonic() < give_up:  # noqa: ASYNC240
        if _waiting[gate] != written:
            written = _waiting[gate]
            # A few bytes, at most once per period.
            count_file.write_text(str(written))  # noqa: ASYNC240
        await asyncio.sleep(_GATE_POLL_S)


def waiting_at(gate: Path) -> int:
    """How many ``hold`` calls on ``gate`` wait, summed over every process (for the bench)."""
    total = 0
    for path in gate.parent.glob(f"{gate.name}.*.waiting"):
        with contextlib.suppress(OSError, ValueError):
            total += int(path.read_text())
    return total
