"""What each transport wrapper costs a message, over the in-memory pair.

``python -m benchmarks.wrapper_overhead`` sends messages from one end of a
``MemoryTransport`` pair and receives them at the other, bare and through each wrapper
(``EncryptedTransport`` too, and the four others stacked), and prints the CPU time per
message (send + receive) and what the wrapper adds to the bare pair: the best of several
rounds of this process's CPU time (a shared machine only ever slows a round down). Two
sizes: a small ``tools/call`` and one with a 4 kB text argument (above the compression
threshold). Batching is measured with 64 senders at once (what it is for); the others
with one.

Row B11 of ``raybus bench`` (:data:`WRAPPERS`): the four stacked beside the bare pair,
each wrapper's own figure (encryption's too) in the row's notes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from benchmarks.report import Row, Side
from benchmarks.workloads import BenchContext, Family, Workload
from transports.base import Transport
from transports.crypto import Direction, EncryptedTransport, Keyring
from transports.memory import MemoryTransport
from transports.message import Request
from transports.wrappers.batching import BatchingTransport
from transports.wrappers.compression import CompressionTransport
from transports.wrappers.logging import LoggingTransport
from transports.wrappers.retry import RetryTransport

__all__ = ["STACKS", "WRAPPERS", "measure"]

_ROUNDS = 5
_MESSAGES = 2048
_SENDERS = 64

# A stack wraps one end of the pair; ``sending`` tells the end that sends from the other
# (only encryption needs to know: each end seals for its own direction and destination).
Stack = Callable[[Transport, bool], Transport]
_KEYS = {"k1": os.urandom(32)}


def _encrypted(inner: Transport, sending: bool) -> Transport:
    return EncryptedTransport(
        inner,
        Keyring.of(_KEYS, "k1"),
        sender_id="client" if sending else "worker",
        sends=Direction.TO_WORKER if sending else Direction.TO_CLIENT,
        send_to="a-to-b" if sending else "b-to-a",
        receive_as=("b-to-a",) if sending else ("a-to-b",),
    )


STACKS: dict[str, Stack] = {
    "bare": lambda inner, _: inner,
    "batching": lambda inner, _: BatchingTransport(inner),
    "compression": lambda inner, _: CompressionTransport(inner),
    "logging": lambda inner, _: LoggingTransport(inner),
    "retry": lambda inner, _: RetryTransport(inner),
    "encryption": _encrypted,
    "all four": lambda inner, _: LoggingTransport(
        BatchingTransport(CompressionTransport(RetryTransport(inner)))
    ),
}
_SIZES = {"small": "hi", "4 kB": "lorem ipsum dolor sit amet " * 152}


async def _round(stack: Stack, text: str, messages: int) -> float:
    raw_a, raw_b = MemoryTransport.pair(max_queued=messages + 1)
    a, b = stack(raw_a, True), stack(raw_b, False)
    call = Request(id=1, method="tools/call", params={"name": "echo", "arguments": {"t": text}})

    async def sender(count: int) -> None:
        for _ in range(count):
            await a.send(call)

    started = time.process_time()
    await asyncio.gather(*(sender(messages // _SENDERS) for _ in range(_SENDERS)))
    for _ in range(messages // _SENDERS * _SENDERS):
        await b.receive()
    spent = time.process_time() - started
    await a.close()
    await b.close()
    return spent / messages * 1e6


def measure(messages: int = _MESSAGES, rounds: int = _ROUNDS) -> dict[tuple[str, str], float]:
    """Microseconds of CPU per message, by (stack, size): the best of ``rounds``."""
    figures: dict[tuple[str, str], float] = {}
    for size, text in _SIZES.items():
        for name, stack in STACKS.items():
            figures[name, size] = min(
                asyncio.run(_round(stack, text, messages)) for _ in range(rounds)
            )
    return figures


B11 = Workload("B11", "transport wrappers: CPU per message", "reported (anchor: bare memory pair)")


async def _run(ctx: BenchContext) -> None:
    messages = max(256, int(_MESSAGES * ctx.scale))
    ctx.progress(f"B11: {messages:,} messages through each transport wrapper")
    figures = await asyncio.to_thread(measure, messages, max(ctx.rounds, 3))
    row = Row.compared(
        B11.id,
        B11.title,
        B11.goal,
        "us/msg",
        Side("all four wrappers", figures["all four", "small"]),
        Side("bare memory pair", figures["bare", "small"]),
    )
    row.details = {f"{name} {size}": us for (name, size), us in figures.items()}
    row.notes = [
        "added per message, small / 4 kB: "
        + ", ".join(
            f"{name} {figures[name, 'small'] - figures['bare', 'small']:+.1f}"
            f" / {figures[name, '4 kB'] - figures['bare', '4 kB']:+.1f} us"
            for name in STACKS
            if name != "bare"
        )
    ]
    ctx.emit(row)


WRAPPERS = Family("wrappers", (B11,), _run)


def main() -> None:
    figures = measure()
    print(f"{'wrapper':<12}" + "".join(f"{size:>22}" for size in _SIZES) + "   (us per message)")
    for name in STACKS:
        cells = []
        for size in _SIZES:
            us, bare = figures[name, size], figures["bare", size]
            cells.append(f"{us:>10.1f} ({us - bare:+7.1f})")
        print(f"{name:<12}" + "".join(f"{cell:>22}" for cell in cells))


if __name__ == "__main__":
    main()
