"""``raybus demo``: the main job, end to end on the embedded default (local Ray).

Starts a local Ray, launches the bus in ``cluster/examples/demo.yaml`` (an SDK server
object, a stdio server command and plain functions, each as a pool), calls tools through
it, fans out a burst of calls, prints the bus status, and shuts everything down.

``raybus demo --stdio`` is the smallest exchange instead: raybus's stdio transport
talking to an official-SDK server subprocess, no Ray involved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from importlib import resources
from typing import Any

import yaml

from cluster.cli.failures import report
from transports.errors import BusError
from transports.message import Notification, Request, Response
from transports.stdio import StdioClientTransport

__all__ = ["add_parser", "run_bus_demo", "run_demo"]

PROTOCOL_VERSION = "2025-11-25"
DEMO_SERVER = (sys.executable, "-m", "cluster.examples.calculator")


async def _call(
    transport: StdioClientTransport, request_id: int, method: str, params: dict[str, Any]
) -> Response:
    await transport.send(Request(id=request_id, method=method, params=params))
    while True:  # a server may interleave notifications (logging, progress)
        delivery = await transport.receive()
        if isinstance(delivery.message, Response) and delivery.message.id == request_id:
            return delivery.message


async def run_demo(timeout_s: float = 30.0) -> list[Response]:
    """Handshake, tools/list and tools/call over stdio; returns the three answers.

    Raises:
        BusError: the server could not be started or the pipe failed.
        TimeoutError: the exchange did not finish within ``timeout_s``.
    """
    async with asyncio.timeout(timeout_s):
        transport = await StdioClientTransport.launch(DEMO_SERVER)
        async with transport:
            initialize = await _call(
                transport,
                1,
                "initialize",
                {
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "raybus-demo", "version": "0.1.0"},
                },
            )
            await transport.send(Notification(method="notifications/initialized"))
            tools = await _call(transport, 2, "tools/list", {})
            call = await _call(
                transport, 3, "tools/call", {"name": "add", "arguments": {"a": 2, "b": 3}}
            )
    return [initialize, tools, call]


def demo_config_data() -> dict[str, Any]:
    text = resources.files("cluster.examples").joinpath("demo.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data  # its `python` command is each worker's own (server_command)


async def run_bus_demo(burst: int = 2000, out: Any = sys.stdout) -> dict[str, Any]:
    """Launch the demo bus on the already-initialised Ray, exercise it, stop it."""
    from cluster.bus import bus_status, launch_bus, stop_bus
    from cluster.cli.status import format_status
    from cluster.client import BusClient
    from cluster.config import parse_config

    config = parse_config(demo_config_data(), "cluster/examples/demo.yaml")
    started = time.perf_counter()
    await launch_bus(config)
    print(f"bus {config.name!r} up in {time.perf_counter() - started:.1f} s", file=out)
    client = await BusClient.connect(config.name)
    try:
        tools = sorted(t.name for t in await client.list_tools())
        print(f"tools over all pools: {', '.join(tools)}", file=out)
        add = await client.call_tool("add", {"a": 2, "b": 3})
        hyp = await client.call_tool("hypotenuse", {"a": 3, "b": 4})
        echo = await client.call_tool("echo", {"text": "hello through the bus"})
        print(f"calc (stdio)    add(2, 3)         -> {add.structured_content}", file=out)
        print(f"geometry (fns)  hypotenuse(3, 4)  -> {hyp.structured_content}", file=out)
        print(f"kit (SDK)       echo(...)         -> {echo.structured_content}", file=out)
        steps: list[float] = []
        await client.call_tool(
            "count_with_progress", {"steps": 3}, progress=lambda p, t, m: steps.append(p)
        )
        print(f"progress notifications seen: {steps}", file=out)
        started = time.perf_counter()
        results = await client.map_tool_calls(
            [("echo", {"text": str(i)}) for i in range(burst)], concurrency=64
        )
        elapsed = time.perf_counter() - started
        failures = [r for r in results if isinstance(r, BusError)]
        rate = burst / elapsed
        print(
            f"burst: {burst} calls in {elapsed:.2f} s ({rate:,.0f}/s), {len(failures)} failed",
            file=out,
        )
        print("", file=out)
        print(format_status(await bus_status(config.name)), file=out)
    finally:
        await client.close()
        await stop_bus(config.name)
    return {
        "burst": burst,
        "failed": len(failures),
        "calls_per_s": burst / elapsed,
        "progress": steps,
    }


def _run(args: argparse.Namespace) -> int:
    if args.stdio:
        return _run_stdio()
    import ray

    from cluster.local_ray import start_local_ray

    start_local_ray(2)
    try:
        outcome = asyncio.run(run_bus_demo(args.burst))
    except (BusError, TimeoutError) as exc:
        return report(exc, 1, context="demo failed")
    finally:
        ray.shutdown()
    return 1 if outcome["failed"] else 0


def _run_stdio() -> int:
    try:
        answers = asyncio.run(run_demo())
    except (BusError, TimeoutError) as exc:
        return report(exc, 1, context="demo failed")
    titles = ("initialize", "tools/list", "tools/call add(2, 3)")
    for title, answer in zip(titles, answers, strict=True):
        print(f"--> {title}")
        print(json.dumps(answer.to_json_dict(), indent=2))
    call = answers[-1]
    if call.is_error or call.result.get("isError"):
        return 1
    return 0


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the main job: a bus on a local Ray, end to end"
    )
    parser.add_argument("--stdio", action="store_true", help="only the stdio transport, no Ray")
    parser.add_argument("--burst", type=int, default=2000, help="calls in the burst (default 2000)")
    parser.set_defaults(run=_run)
