"""The HTTP load generator: official ``mcp.Client`` clients in a process of their own.

On two cores the clients' CPU competes with the servers', so they run apart from both
sides and report what they used. The bench drives this process with one JSON command
per stdin line and reads one JSON answer per stdout line:

- ``{"op": "connect", "target": T, "url": U, "clients": N}``: open N clients to U
  (``mcp.Client(url)``, the SDK's own Streamable HTTP client, as a user writes it).
- ``{"op": "loop", "target": T, "tool": X, "arguments": {...}, "duration_s": S}``:
  every client of T calls X in a closed loop for S seconds.
- ``{"op": "burst", "target": T, "tool": X, "arguments": {...}, "calls": C}``: C calls
  shared by T's clients, each taking the next as soon as its last one ended.
- ``{"op": "close", "target": T}``.

Round answers are :class:`~benchmarks.measure.RoundResult` dicts whose ``cpu_s`` holds
this process's CPU seconds during the round (``loadgen``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
import time
from typing import Any

import mcp
import uvloop

from benchmarks.measure import Call, RoundResult, burst, closed_loop

__all__ = ["LoadGenerator"]

_CONNECT_AT_ONCE = 8
# Connecting 64 clients to a cold server on a loaded machine; an answer to a round
# comes after its duration plus the calls still running (each bounded by CALL_TIMEOUT_S).
_ANSWER_TIMEOUT_S = 600.0
_ANSWER_LIMIT_BYTES = 64 * 1024 * 1024


class _Clients:
    def __init__(self) -> None:
        self.targets: dict[str, tuple[contextlib.AsyncExitStack, list[mcp.Client]]] = {}

    async def connect(self, target: str, url: str, count: int) -> dict[str, Any]:
        stack = contextlib.AsyncExitStack()
        gate = asyncio.Semaphore(_CONNECT_AT_ONCE)

        async def one() -> mcp.Client:
            async with gate:
                return await stack.enter_async_context(mcp.Client(url))

        try:
            clients = list(await asyncio.gather(*(one() for _ in range(count))))
        except BaseException:
            await stack.aclose()
            raise
        self.targets[target] = (stack, clients)
        session = clients[0].session
        return {"protocol": getattr(session, "protocol_version", None)}

    def calls(self, command: dict[str, Any]) -> list[Call]:
        tool, arguments = command["tool"], command.get("arguments", {})
        return [
            functools.partial(client.call_tool, tool, arguments)
            for client in self.targets[command["target"]][1]
        ]

    async def close(self, target: str) -> None:
        stack, _ = self.targets.pop(target)
        await stack.aclose()


async def _handle(clients: _Clients, command: dict[str, Any]) -> dict[str, Any]:
    op = command["op"]
    if op == "connect":
        return await clients.connect(command["target"], command["url"], command["clients"])
    if op == "close":
        await clients.close(command["target"])
        return {}
    cpu_before = time.process_time()
    if op == "loop":
        result = await closed_loop(clients.calls(command), command["duration_s"])
    elif op == "burst":
        calls = clients.calls(command)
        shared = [calls[i % len(calls)] for i in range(command["calls"])]
        result = await burst(len(calls), shared)
    else:
        raise ValueError(f"unknown op {op!r}")
    result.cpu_s["loadgen"] = time.process_time() - cpu_before
    return result.as_dict()


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    clients = _Clients()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            try:
                answer = await _handle(clients, json.loads(line))
            except Exception as exc:  # noqa: BLE001 - the bench shows the reason
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(answer), flush=True)
    finally:
        for target in list(clients.targets):
            with contextlib.suppress(Exception):
                await clients.close(target)


class LoadGenerator:
    """The parent's handle on a load generator process (``async with`` it)."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    async def __aenter__(self) -> LoadGenerator:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            # A round's answer is one JSON line holding every latency: thousands of
            # them at today's rates, far past asyncio's 64 KiB line limit.
            limit=_ANSWER_LIMIT_BYTES,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            async with asyncio.timeout(60):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    async def request(self, **command: Any) -> dict[str, Any]:
        """Send one command and return its answer.

        Raises:
            RuntimeError: the command failed (the load generator's reason) or the
                process ended.
        """
        process = self._process
        assert process is not None
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write((json.dumps(command) + "\n").encode())
        await process.stdin.drain()
        async with asyncio.timeout(_ANSWER_TIMEOUT_S):
            line = await process.stdout.readline()
        if not line:
            raise RuntimeError("the load generator exited")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"load generator: {answer['error']}")
        return answer

    async def round(self, **command: Any) -> RoundResult:
        """A ``loop`` or ``burst`` command's answer as a :class:`RoundResult`."""
        return RoundResult.from_dict(await self.request(**command))


if __name__ == "__main__":
    uvloop.run(_serve())
