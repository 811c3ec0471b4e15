"""ProducerSlot's rule, driven by a fake producer: a record aiokafka gave up retires the
producer (its idempotent numbering is out of step with the broker for good), the next send
starts a new one; refusals that queued nothing keep it. The real broker case (a broker
away longer than the request timeout) is in tests/faults/test_kafka_long_outage.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    LeaderNotAvailableError,
    OutOfOrderSequenceNumber,
    ProducerClosed,
)

from transports.kafka.producer import ProducerSlot


class FakeProducer:
    """What ProducerSlot uses of AIOKafkaProducer: start, send (a future per record), stop."""

    def __init__(self, number: int, *, start_error: KafkaError | None = None) -> None:
        self.number = number
        self.start_error = start_error
        self.refusal: KafkaError | None = None
        self.acks: list[asyncio.Future[Any]] = []
        self.stopped = asyncio.Event()

    async def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None
    ) -> asyncio.Future[Any]:
        if self.refusal is not None:
            raise self.refusal
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack

    async def stop(self) -> None:
        self.stopped.set()


class Factory:
    def __init__(self) -> None:
        self.made: list[FakeProducer] = []
        self.start_errors: list[KafkaError] = []

    def __call__(self) -> AIOKafkaProducer:
        error = self.start_errors.pop(0) if self.start_errors else None
        producer = FakeProducer(len(self.made), start_error=error)
        self.made.append(producer)
        return cast(AIOKafkaProducer, producer)


def slot_of(factory: Callable[[], AIOKafkaProducer]) -> ProducerSlot:
    return ProducerSlot(factory, name="test", close_timeout_s=5.0, retry_backoff_s=0.01)


async def send(slot: ProducerSlot) -> asyncio.Future[Any]:
    return await slot.send("topic", b"{}", None, [])


async def settled(producer: FakeProducer) -> None:
    async with asyncio.timeout(5):
        await producer.stopped.wait()


@pytest.mark.parametrize("given_up", [LeaderNotAvailableError(), OutOfOrderSequenceNumber()])
async def test_a_record_aiokafka_gave_up_retires_the_producer_and_the_next_send_gets_a_new_one(
    given_up: KafkaError,
) -> None:
    factory = Factory()
    slot = slot_of(factory)
    await slot.start()
    ack = await send(slot)
    first = factory.made[0]
    first.acks[0].set_exception(given_up)
    with pytest.raises(type(given_up)):
        await ack  # its sender hears it: the record was not written
    await settled(first)
    await send(slot)
    assert len(factory.made) == 2
    assert len(factory.made[1].acks) == 1
    assert slot.replacements == 1
    await slot.close()


async def test_several_records_given_up_at_once_retire_the_producer_once() -> None:
    factory = Factory()
    slot = slot_of(factory)
    await slot.start()
    acks = [await send(slot) for _ in range(3)]
    for ack in factory.made[0].acks:
        ack.set_exception(OutOfOrderSequenceNumber())
    await asyncio.gather(*acks, return_exceptions=True)
    await send(slot)
    assert slot.replacements == 1
    assert len(factory.made) == 2
    await slot.close()


async def test_refusals_that_queued_nothing_and_callers_who_stopped_waiting_keep_it() -> None:
    factory = Factory()
    slot = slot_of(factory)
    await slot.start()
    first = factory.made[0]
    first.refusal = KafkaTimeoutError()  # e.g. no metadata in time: nothing was numbered
    with pytest.raises(KafkaTimeoutError):
        await send(slot)
    first.refusal = None
    ack = await send(slot)
    ack.cancel()  # the caller's own deadline: the record is still in the producer
    await asyncio.sleep(0)  # lets the done callback run
    ack = await send(slot)
    ack.set_result(None)
    await ack
    assert slot.replacements == 0
    assert len(factory.made) == 1
    await slot.close()
    assert first.stopped.is_set()


async def test_a_producer_that_takes_nothing_any_more_is_retired() -> None:
    factory = Factory()
    slot = slot_of(factory)
    await slot.start()
    factory.made[0].refusal = KafkaError("Unexpected error during batch delivery")  # sender died
    with pytest.raises(KafkaError):
        await send(slot)
    await send(slot)
    assert slot.replacements == 1
    assert len(factory.made[1].acks) == 1
    await slot.close()


async def test_a_send_waits_for_a_replacement_that_cannot_start_yet_within_its_own_bound() -> None:
    factory = Factory()
    slot = slot_of(factory)
    await slot.start()
    ack = await send(slot)
    away = KafkaConnectionError("Unable to bootstrap")  # the broker is still away
    factory.start_errors.extend([away, away])
    factory.made[0].acks[0].set_exception(LeaderNotAvailableError())
    with pytest.raises(LeaderNotAvailableError):
        await ack
    await settled(factory.made[0])  # retired
    async with asyncio.timeout(5):
        await send(slot)  # two refused starts, then one that works
    assert len(factory.made) == 4
    assert len(factory.made[3].acks) == 1
    for refused in factory.made[1:3]:
        await settled(refused)  # the ones that did not start are stopped too
    factory.made[3].refusal = OutOfOrderSequenceNumber()  # retire it: the next must start
    with pytest.raises(OutOfOrderSequenceNumber):
        await send(slot)
    factory.start_errors.extend([away] * 1000)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):  # the sender's own bound ends the wait
            await send(slot)
    await slot.close()


async def test_the_first_start_is_not_retried() -> None:
    factory = Factory()
    factory.start_errors.append(KafkaConnectionError("Unable to bootstrap"))
    slot = slot_of(factory)
    with pytest.raises(KafkaConnectionError):
        await slot.start()
    await slot.close()


async def test_a_closed_slot_takes_nothing_and_has_stopped_its_producer() -> None:
    factory = Factory()
    slot = slot_of(factory)
    await slot.start()
    await slot.close()
    assert factory.made[0].stopped.is_set()
    with pytest.raises(ProducerClosed):
        await send(slot)
