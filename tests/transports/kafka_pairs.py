"""Two Kafka transports talking over a fresh pair of topics, for the contract suite and
its variants (secured broker, wrappers, encryption).

``a`` produces to ``<name>.a-to-b``, which ``b`` consumes, and back; each end has its own
consumer group. ``inject`` produces raw bytes straight to ``a``'s topic: none of
``KafkaTransport.send``'s checks apply, so a suite can feed ``b`` malformed records.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from tests.transports.pairs import CONTRACT_LIMITS
from transports.kafka.transport import KafkaTransport, KafkaTransportConfig

__all__ = ["KafkaEnds", "kafka_ends"]


@dataclass
class KafkaEnds:
    a: KafkaTransport
    b: KafkaTransport
    a_to_b: str
    b_to_a: str

    async def inject(self, raw: bytes) -> None:
        producer = self.a._producer
        assert producer is not None
        await (await producer.send(self.a_to_b, raw, self.a.config.client_id.encode(), []))


def _end(
    bootstrap: str, name: str, side: str, send: str, receive: str, **config: Any
) -> KafkaTransport:
    return KafkaTransport(
        KafkaTransportConfig(
            bootstrap=bootstrap,
            send_topic=send,
            receive_topics=(receive,),
            group_id=f"{name}-{side}",
            topic_prefix=f"{name}.",
            partitions=2,
            client_id=f"{name}-{side}",
            **config,
        )
    )


@asynccontextmanager
async def kafka_ends(bootstrap: str, name: str, **config: Any) -> AsyncIterator[KafkaEnds]:
    """Both ends started (``config``: more :class:`KafkaTransportConfig` fields, e.g.
    ``security``; the contract's size and depth limits unless given), closed after."""
    config.setdefault("max_message_bytes", CONTRACT_LIMITS.max_message_bytes)
    config.setdefault("max_depth", CONTRACT_LIMITS.max_depth)
    a_to_b, b_to_a = f"{name}.a-to-b", f"{name}.b-to-a"
    a = await _end(bootstrap, name, "a", a_to_b, b_to_a, **config).start()
    try:
        b = await _end(bootstrap, name, "b", b_to_a, a_to_b, **config).start()
    except BaseException:
        await a.close()
        raise
    try:
        yield KafkaEnds(a, b, a_to_b, b_to_a)
    finally:
        await a.close()  # closing twice (after a wrapper closed it) is a no-op
        await b.close()
