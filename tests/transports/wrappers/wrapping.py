"""The wrappers (and one composition of all four) as the contract suites apply them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from tests.transports.pairs import TransportPair
from transports.base import Transport
from transports.wrappers.batching import BatchingTransport
from transports.wrappers.compression import CompressionTransport
from transports.wrappers.logging import LoggingTransport
from transports.wrappers.retry import RetryTransport

Wrap = Callable[[Transport], Transport]


def all_four(inner: Transport) -> Transport:
    # Retry next to the wire (each batch is retried whole), compression over the batch
    # (one frame compresses better than its parts), logging outermost (one event per
    # message the application sent).
    return LoggingTransport(
        BatchingTransport(CompressionTransport(RetryTransport(inner), threshold_bytes=256)),
        log_payloads=True,
    )


WRAPS: dict[str, Wrap] = {
    "batching": lambda inner: BatchingTransport(inner),
    # A low threshold so the suite's small messages travel compressed too.
    "compression": lambda inner: CompressionTransport(inner, threshold_bytes=32),
    "logging": lambda inner: LoggingTransport(inner, log_payloads=True),
    "retry": lambda inner: RetryTransport(inner),
    "all-four": all_four,
}


@asynccontextmanager
async def wrapped(
    pair_factory: Callable[[], AbstractAsyncContextManager[TransportPair]], wrap: Wrap
) -> AsyncIterator[TransportPair]:
    """Both ends of a pair wrapped; ``inject`` still writes raw frames to the inner pair."""
    async with pair_factory() as raw:
        a, b = wrap(raw.a), wrap(raw.b)
        try:
            yield TransportPair(a, b, raw.inject)
        finally:
            await a.close()
            await b.close()
