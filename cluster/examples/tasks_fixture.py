"""An MCP server of long-running tools, for tasks (tests, demos).

``long_job`` runs for ``seconds``, reporting progress every ``step_s``; given a
``marker`` path prefix it leaves files that say what happened to it, for tests that
cannot otherwise see inside a worker: ``<marker>.pid`` (the serving process, written at
start), ``<marker>.finished`` or ``<marker>.cancelled``. ``quick`` answers at once and is
not a task tool unless configured so; ``report`` is short, for a task-only setting;
``confirm`` asks its caller a yes/no question mid-call (an SDK elicitation).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from mcp.server.mcpserver import Context, MCPServer
from pydantic import BaseModel

__all__ = ["server"]

server = MCPServer("tasks-fixture")


def _mark(marker: str, suffix: str, text: str) -> None:
    if marker:
        # Written whole, then renamed: a test that sees the file must not read it empty
        # (a loaded fresh-clone run did, between write_text's open and its write).
        path = Path(f"{marker}.{suffix}")
        partial = path.with_name(path.name + ".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)


@server.tool()
async def long_job(seconds: float, step_s: float = 1.0, marker: str = "", *, ctx: Context) -> str:
    """Work for ``seconds``, reporting progress every ``step_s``; returns a summary."""
    _mark(marker, "pid", str(os.getpid()))
    steps = max(1, round(seconds / step_s))
    try:
        for step in range(1, steps + 1):
            await asyncio.sleep(seconds / steps)  # the work itself
            await ctx.report_progress(step, steps, f"step {step} of {steps}")
    except asyncio.CancelledError:
        _mark(marker, "cancelled", "cancelled")
        raise
    _mark(marker, "finished", "finished")
    return f"done after {steps} steps"


@server.tool()
def quick(text: str) -> str:
    """Answer at once (a tool that runs synchronously)."""
    return text.upper()


@server.tool()
async def report(title: str) -> str:
    """A short job that its pool may declare task-only (``tasks.tools: {report: required}``)."""
    await asyncio.sleep(0.1)
    return f"report {title!r} written"


class _Answer(BaseModel):
    yes: bool


@server.tool()
async def confirm(question: str, ctx: Context) -> str:
    """Ask the caller ``question`` (an elicitation in the middle of the call)."""
    answer = await ctx.elicit(question, _Answer)
    if answer.action == "accept":
        return "confirmed" if answer.data.yes else "refused"
    return answer.action
