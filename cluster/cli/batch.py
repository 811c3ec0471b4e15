"""``raybus call BUS --batch FILE.jsonl``: many tool calls from a file, one result a line.

Input, one JSON object per line (blank lines are skipped)::

    {"tool": "echo", "arguments": {"text": "hi"}, "id": "row-17"}

``tool`` (required) names the tool; ``arguments`` (an object, default ``{}``) are its
arguments; ``id`` (a string or integer, optional) is copied to the result line. Any other
key is an error. The file is checked whole, one line at a time and before Ray is joined:
a malformed line ends the command with its line number (exit 2) before any call is
sent. Once connected, every tool the file names must be offered by the bus: a tool it
does not offer (a typo, the wrong bus) ends the command naming the tool and the first
line using it (exit 2), again before any call is sent, instead of answering every one
of its lines with the same error. Then the file is read again and its calls stream through
:meth:`BusClient.stream_tool_calls <cluster.client.BusClient.stream_tool_calls>`, so
memory stays flat however long the file is.

Output, one JSON object per call, in the order the calls complete::

    {"line": 3, "id": "row-17", "result": {"content": [...], "structuredContent": {...}}}
    {"line": 4, "error": {"code": -32602, "message": "Unknown tool: nope"}}

``line`` is the call's line number in the input; ``result`` is the tool's
``CallToolResult`` as MCP sends it (``isError: true`` when the tool reported a failure);
``error`` is the JSON-RPC error the call ended with (``code``, ``message``, ``data`` when
there is one). A progress bar (count, rate, ETA) goes to stderr when stderr is a
terminal, and nothing otherwise. Exit status: 0 when every call returned a result that is
not an error, 1 otherwise (with a count on stderr), 2 for bad input, 130 when interrupted
(the calls in flight are cancelled on the bus).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from cluster.cli.failures import fail
from cluster.cli.interrupts import signals_cancel
from cluster.client import BusClient, IndexedOutcome
from transports.codec import DEFAULT_LIMITS, parse_json
from transports.errors import INTERNAL_ERROR, BusError, BusErrorCode, BusTimeout, CallError

__all__ = [
    "BatchCall",
    "BatchFile",
    "BatchInputError",
    "check_file",
    "outcome_record",
    "read_calls",
    "run",
]

_KEYS = frozenset({"tool", "arguments", "id"})
_INTERRUPTED = 130


class BatchInputError(ValueError):
    """A line of the batch file is not a call; says which line and why."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(path, line, reason)
        self.path = path
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path} line {self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class BatchCall:
    line: int
    tool: str
    arguments: dict[str, Any]
    id: str | int | None


def _call_of(path: Path, line: int, raw: bytes) -> BatchCall:
    def refuse(reason: str) -> BatchInputError:
        return BatchInputError(path, line, reason)

    try:
        obj = parse_json(raw, DEFAULT_LIMITS)
    except BusError as exc:  # ParseError, MessageTooLarge
        raise refuse(f"not a JSON object: {exc}") from None
    if not isinstance(obj, dict):
        raise refuse(
            f'expected a JSON object like {{"tool": ..., "arguments": {{...}}}}, '
            f"got {type(obj).__name__}"
        )
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise refuse(f"unknown key {unknown[0]!r} (a call has tool, arguments and id)")
    tool = obj.get("tool")
    if not isinstance(tool, str) or not tool:
        raise refuse('"tool" must be a non-empty string')
    arguments = obj.get("arguments", {})
    if not isinstance(arguments, dict):
        raise refuse('"arguments" must be a JSON object')
    call_id = obj.get("id")
    if call_id is not None and (not isinstance(call_id, str | int) or isinstance(call_id, bool)):
        raise refuse('"id" must be a string or an integer')
    return BatchCall(line, tool, arguments, call_id)


def read_calls(path: Path) -> Iterator[BatchCall]:
    """The file's calls, one line at a time (blank lines skipped).

    Raises:
        BatchInputError: a line is not a call (the first such line).
        OSError: the file cannot be read.
    """
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            if raw.strip():
                yield _call_of(path, number, raw)


@dataclass(frozen=True, slots=True)
class BatchFile:
    """What checking a batch file found: how many calls, and each tool's first line."""

    calls: int
    first_line_of: dict[str, int]


def check_file(path: Path) -> BatchFile:
    """Check every line of the file, holding one line at a time.

    Raises:
        BatchInputError: a line is not a call (the first such line).
        OSError: the file cannot be read.
    """
    calls = 0
    first_line_of: dict[str, int] = {}
    for call in read_calls(path):
        calls += 1
        first_line_of.setdefault(call.tool, call.line)
    return BatchFile(calls, first_line_of)


async def _unknown_tool(client: BusClient, path: Path, checked: BatchFile) -> str | None:
    """Why the file cannot run on this bus (the first line naming a tool it lacks), or None."""
    catalogs = await client.catalogs()
    offered = {str(tool.get("name")) for catalog in catalogs.values() for tool in catalog.tools}
    unknown = [tool for tool in checked.first_line_of if tool not in offered]
    if not unknown:
        return None
    tool = min(unknown, key=checked.first_line_of.__getitem__)
    return (
        f"{path} line {checked.first_line_of[tool]}: bus {client.bus!r} offers no tool "
        f"{tool!r}; its tools are {sorted(offered) or 'none'}"
    )


def _error_of(exc: BusError) -> dict[str, Any]:
    if isinstance(exc, CallError):
        error: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.data is not None:
            error["data"] = exc.data
        return error
    code = BusErrorCode.DEADLINE_EXCEEDED if isinstance(exc, BusTimeout) else INTERNAL_ERROR
    return {"code": int(code), "message": str(exc)}


def outcome_record(call: BatchCall, outcome: IndexedOutcome) -> dict[str, Any]:
    """The output line of one call."""
    record: dict[str, Any] = {"line": call.line}
    if call.id is not None:
        record["id"] = call.id
    if isinstance(outcome.outcome, BusError):
        record["error"] = _error_of(outcome.outcome)
    else:
        record["result"] = outcome.outcome.model_dump(mode="json", by_alias=True, exclude_none=True)
    return record


@dataclass
class _Tally:
    written: int = 0
    failed: int = 0


async def _stream(
    client: BusClient,
    path: Path,
    out: IO[str],
    progress: tqdm[Any],
    tally: _Tally,
    *,
    concurrency: int,
    timeout_s: float,
) -> None:
    in_flight: dict[int, BatchCall] = {}  # by stream index; at most `concurrency` entries

    def calls() -> Iterator[tuple[str, dict[str, Any]]]:
        for index, call in enumerate(read_calls(path)):
            in_flight[index] = call
            yield call.tool, call.arguments

    stream = client.stream_tool_calls(calls(), concurrency=concurrency, timeout_s=timeout_s)
    async with aclosing(stream) as outcomes:
        async for outcome in outcomes:
            record = outcome_record(in_flight.pop(outcome.index), outcome)
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
            tally.written += 1
            tally.failed += "error" in record or bool(record["result"].get("isError"))
            progress.update(1)


async def run(args: argparse.Namespace, out: IO[str], checked: BatchFile) -> int:
    """Stream the checked batch file ``args.batch`` through the bus ``args.bus``."""
    path = Path(args.batch)
    async with await BusClient.connect(args.bus) as client:
        refusal = await _unknown_tool(client, path, checked)
        if refusal is not None:
            return fail(refusal)
        return await _run_connected(client, args, path, out, checked.calls)


async def _run_connected(
    client: BusClient, args: argparse.Namespace, path: Path, out: IO[str], total: int
) -> int:
    tally = _Tally()
    with (
        tqdm(
            total=total,
            unit="call",
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
            dynamic_ncols=True,
            smoothing=0.1,
        ) as progress,
        signals_cancel(asyncio.get_running_loop()) as interrupt,
    ):
        try:
            await _stream(
                client,
                path,
                out,
                progress,
                tally,
                concurrency=args.concurrency,
                timeout_s=args.timeout,
            )
        except asyncio.CancelledError:
            if not interrupt.fired:
                raise
            interrupted = asyncio.current_task()
            if interrupted is not None:
                interrupted.uncancel()  # handled: the calls in flight were cancelled
            progress.close()
            print(
                f"raybus: interrupted after {tally.written} of {total} calls",
                file=sys.stderr,
            )
            return _INTERRUPTED
    if tally.failed:
        print(f"raybus: {tally.failed} of {total} calls failed", file=sys.stderr)
        return 1
    return 0
