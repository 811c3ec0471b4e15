"""Codec cost and single-pipe throughput of the base transports.

Run with ``make bench`` (or ``python -m benchmarks transports``). Reports messages per
second for a request/response round trip and for one-way streaming over each transport,
and the decode cost of typical and adversarial inputs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from tests.transports.pairs import PAIR_FACTORIES, TransportPair
from transports.codec import DecodeLimits, decode_message, encode_message
from transports.errors import ParseError
from transports.message import Request, Response

TOOL_CALL = Request(
    id=1,
    method="tools/call",
    params={"name": "add", "arguments": {"a": 2, "b": 3}, "_meta": {"progressToken": "t"}},
)


def _per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _time_it(fn: Callable[[], object], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return time.perf_counter() - start


def codec_rows() -> list[tuple[str, str]]:
    data = encode_message(TOOL_CALL)
    big = encode_message(
        Response.success(1, {"content": [{"type": "text", "text": "x" * 1_000_000}]})
    )
    deep = b'{"jsonrpc":"2.0","id":1,"method":"x","params":' + b"[" * 500_000 + b"]" * 500_000
    wide = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"v": [[i] for i in range(50_000)]}}
    ).encode()
    rows = []
    n = 20_000
    rows.append(
        (
            f"decode tools/call ({len(data)} B)",
            f"{_time_it(lambda: decode_message(data), n) / n * 1e6:.1f} us",
        )
    )
    rows.append(
        ("encode tools/call", f"{_time_it(lambda: encode_message(TOOL_CALL), n) / n * 1e6:.1f} us")
    )
    rows.append(
        (
            "decode 1 MB text result",
            f"{_time_it(lambda: decode_message(big), 20) / 20 * 1e3:.2f} ms",
        )
    )
    rows.append(
        (
            f"decode {len(wide) // 1024} KB wide array",
            f"{_time_it(lambda: decode_message(wide), 20) / 20 * 1e3:.2f} ms",
        )
    )

    def reject_deep() -> None:
        try:
            decode_message(deep, DecodeLimits(max_message_bytes=2_000_000))
        except ParseError:
            return
        raise AssertionError("deep input was accepted")

    rows.append(("reject 1 MB of nesting", f"{_time_it(reject_deep, 10) / 10 * 1e3:.2f} ms"))
    return rows


async def _transport_rows() -> list[tuple[str, str]]:
    rows = []
    for name, factory in sorted(PAIR_FACTORIES.items()):
        async with factory() as pair:
            count = 2000
            start = time.perf_counter()
            for i in range(count):
                await pair.a.send(Request(id=i, method="tools/call", params=TOOL_CALL.params))
                request = (await pair.b.receive()).message
                assert isinstance(request, Request)
                await pair.b.send(Response.success(request.id, {"ok": True}))
                await pair.a.receive()
            round_trip = time.perf_counter() - start

            count_stream = 20_000

            async def produce(pair: TransportPair = pair, count_stream: int = count_stream) -> None:
                for i in range(count_stream):
                    await pair.a.send(Request(id=i, method="tools/call", params=TOOL_CALL.params))

            start = time.perf_counter()
            producer = asyncio.create_task(produce())
            for _ in range(count_stream):
                await pair.b.receive()
            await producer
            stream = time.perf_counter() - start
        rates = f"{_per_second(count, round_trip):,.0f}/s"
        rates += f"  {_per_second(count_stream, stream):,.0f}/s"
        rows.append((f"{name}: round trips / one-way", rates))
    return rows


def run() -> list[tuple[str, str]]:
    return codec_rows() + asyncio.run(_transport_rows())
