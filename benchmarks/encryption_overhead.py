"""What end-to-end encryption costs per message: ``python -m benchmarks.encryption_overhead``.

Each figure is ``time.perf_counter`` over N messages (20,000 by default), the best of
several interleaved rounds (a shared machine's noise only ever adds time), in
microseconds per message, for bodies of 200 B, 4 KiB and 64 KiB:

* plain: encode the JSON-RPC message, then decode it (what every transport does);
* sealed: the same, plus sealing on the sending side (a fresh nonce, AES-256-GCM, the
  sealed notification encoded) and opening on the receiving side (decode the sealed
  notification, authenticate and decrypt, the replay window's check and commit).

The difference is the wrapper's overhead per message. No broker and no Ray: the
transports themselves cost the same with or without it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from transports.base import Delivery
from transports.codec import decode_message, encode_message
from transports.crypto.keyring import Keyring
from transports.crypto.seal import Direction
from transports.crypto.transport import SealedChannel
from transports.envelope import Envelope
from transports.message import Request

__all__ = ["SIZES", "main", "measure"]

SIZES = (200, 4096, 65536)
_ROUNDS = 3
_DESTINATION = "bench.mcp.requests.pool"
_ENVELOPE = Envelope(
    client_id="bench-client",
    request_id="r-1",
    reply_to="bench.mcp.responses.bench-client",
    method="tools/call",
    name="echo",
)


def _message(size: int) -> Request:
    return Request(id=1, method="tools/call", params={"name": "echo", "text": "x" * size})


def _plain(size: int, messages: int) -> float:
    message = _message(size)
    started = time.perf_counter()
    for _ in range(messages):
        decode_message(encode_message(message))
    return time.perf_counter() - started


def _sealed(size: int, messages: int) -> float:
    key = os.urandom(32)
    sender = SealedChannel(Keyring.of({"k1": key}, "k1"), sender="b", sends=Direction.TO_WORKER)
    receiver = SealedChannel(Keyring.of({"k1": key}, "k1"), sender="w", sends=Direction.TO_CLIENT)
    message = _message(size)
    destinations = frozenset({_DESTINATION})

    async def run() -> float:
        started = time.perf_counter()
        for _ in range(messages):
            body, clear = sender.seal_body(encode_message(message), _ENVELOPE, _DESTINATION)
            delivery = Delivery(decode_message(body), clear, len(body))
            await receiver.open(delivery, destinations, redelivers=False)
        return time.perf_counter() - started

    return asyncio.run(run())


def measure(messages: int) -> dict[str, float]:
    """Microseconds per message of each figure (best of the rounds)."""
    best: dict[str, float] = {}
    for _ in range(_ROUNDS):
        for size in SIZES:
            for name, run in ((f"plain {size} B", _plain), (f"sealed {size} B", _sealed)):
                seconds = run(size, messages)
                best[name] = min(best.get(name, float("inf")), seconds / messages * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    for name, micros in measure(args.messages).items():
        print(f"{name:24s} {micros:10.2f} us")


if __name__ == "__main__":
    main()
