"""Case 6, on one Kafka transport: the broker away longer than every client timeout.

The bus-level case is in :mod:`tests.faults.test_broker_restart`; this one isolates the
transport. Records are sent every 50 ms while the broker stops (it reports its partitions
leaderless as it goes), stays away 25 s (longer than the 15 s request timeout, after
which aiokafka gives queued records up) and starts again. What must hold:

* every send ends (acknowledged or an error), none hangs;
* once the broker is back, sends are acknowledged again within a bound (an idempotent
  aiokafka producer that gave records up was refused every later record with
  ``OutOfOrderSequenceNumber`` for good: the defect this case pins down);
* every acknowledged record is read back, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter

import pytest

from cluster.services.state import default_cache_dir
from tests.faults.figures import figure
from tests.faults.restartable import RestartableKafka, halt, resume
from transports.errors import BusError
from transports.kafka.transport import KafkaTransport, KafkaTransportConfig
from transports.message import Notification

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OUTAGE_S = 25.0
# Bounds that stop a hang on a cold, loaded 2-core machine; they measure nothing.
RECOVERY_BOUND_S = 30.0
SEND_BOUND_S = 60.0  # the transport's delivery bound (30 s) plus a margin
READ_BOUND_S = 120.0


def tick(number: int) -> Notification:
    return Notification(method="tick", params={"n": number})


async def send_counted(transport: KafkaTransport, number: int, acked: list[int]) -> str:
    """Send one tick; its outcome ("ok" or the error's class), bounded."""
    async with asyncio.timeout(SEND_BOUND_S):  # a hang fails the test here
        try:
            await transport.send(tick(number))
        except BusError as exc:
            return type(exc).__name__
    acked.append(number)
    return "ok"


async def sent_while_away(
    transport: KafkaTransport, stop: asyncio.Event, acked: list[int]
) -> Counter[str]:
    """A send every 50 ms until ``stop``; how they ended."""
    sends: list[asyncio.Task[str]] = []
    while not stop.is_set():
        sends.append(asyncio.create_task(send_counted(transport, len(sends), acked)))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):  # the pace of the stream
                await stop.wait()
    return Counter(await asyncio.gather(*sends))


async def read_back(config: KafkaTransportConfig, topic: str, wanted: set[int]) -> Counter[int]:
    """Every tick on ``topic`` until all of ``wanted`` were seen: how often each came."""
    seen: Counter[int] = Counter()
    reader = KafkaTransport(
        config.model_copy(update={"send_topic": None, "receive_topics": (topic,)})
    )
    async with reader, asyncio.timeout(READ_BOUND_S):
        while not wanted <= set(seen):
            delivery = await reader.receive()
            assert isinstance(delivery.message, Notification)
            assert isinstance(delivery.message.params, dict)
            seen[delivery.message.params["n"]] += 1
            await delivery.ack()
    return seen


async def test_a_kafka_transport_sends_again_after_a_broker_outage_longer_than_its_timeouts() -> (
    None
):
    kafka = RestartableKafka(default_cache_dir())
    await kafka.start()
    try:
        topic = f"outage-{uuid.uuid4().hex[:8]}"
        config = KafkaTransportConfig(
            bootstrap=kafka.bootstrap,
            send_topic=topic,
            group_id=f"outage-reader-{topic}",
            partitions=2,
            client_id=f"outage-{topic}",
        )
        acked: list[int] = []
        async with KafkaTransport(config) as transport:
            await transport.send(tick(-1))  # the topic exists and the producer is warm
            back = asyncio.Event()
            stream = asyncio.create_task(sent_while_away(transport, back, acked))
            stopped_at = time.monotonic()
            await halt(kafka)
            await asyncio.sleep(OUTAGE_S)  # the fault's length, not a wait on state
            assert kafka.launched is not None
            await resume(kafka, kafka.launched)
            back_at = time.monotonic()
            back.set()
            during = await stream

            # Sends succeed again within a bound, and then every one does.
            async with asyncio.timeout(RECOVERY_BOUND_S):
                number = 100_000
                while await send_counted(transport, number, acked) != "ok":
                    number += 1
            recovered_after_s = time.monotonic() - back_at
            after = Counter([await send_counted(transport, 200_000 + i, acked) for i in range(20)])
        seen = await read_back(config, topic, {-1, *acked})
        figure(
            f"kafka transport long outage: away_s {back_at - stopped_at:.1f}; "
            f"recovered_after_s {recovered_after_s:.2f}; sends while away {dict(during)}; "
            f"after {dict(after)}; acknowledged {len(acked)}, read back "
            f"{len(set(seen) & set(acked))}, repeated {sum(n > 1 for n in seen.values())}"
        )
        assert after == Counter({"ok": 20}), after
        lost = set(acked) - set(seen)
        assert not lost, sorted(lost)[:10]
        assert all(count == 1 for count in seen.values()), seen.most_common(5)
    finally:
        await kafka.stop()
