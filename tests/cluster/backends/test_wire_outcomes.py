"""What a broker client's wire says of each frame of a batch that went partly wrong.

The rule the bus relies on: "not sent" only for a frame that certainly never reached the
broker; a frame handed over and then not confirmed may still be delivered (a Kafka run
saw 5 such requests run after a long outage), so it is "unconfirmed". The wires' logic
only: the transports are stand-ins that fail on cue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import SimpleNamespace
from typing import Any

import aiohttp
import botocore.exceptions

from cluster.backends.kafka import KafkaClientWire
from cluster.backends.sqs import SqsClientWire
from transports.envelope import Envelope
from transports.errors import (
    BusError,
    BusTimeout,
    ConnectionClosed,
    DeliveryUnconfirmed,
    MessageTooLarge,
)
from transports.frame import Frame
from transports.message import Request, TransportMessage


def call(number: int) -> Frame:
    envelope = Envelope(
        client_id="c", request_id=str(number), method="tools/call", name="echo", reply_to="r"
    )
    return Frame.of(envelope, Request(id=number, method="tools/call", params={"name": "echo"}))


def outcomes(failed: list[tuple[Frame, BusError]]) -> dict[str, type[BusError]]:
    return {frame.envelope.request_id: type(why) for frame, why in failed}


class QueueingKafka:
    """``queue_frame_to`` as the Kafka transport has it: refusals at once (not queued),
    or an awaitable confirmation that fails later (queued, then not confirmed)."""

    def __init__(self, refused_now: dict[str, BusError], unconfirmed: dict[str, BusError]):
        self._refused_now = refused_now
        self._unconfirmed = unconfirmed

    async def queue_frame_to(
        self, topic: str, payload: bytes, envelope: Envelope | None = None
    ) -> Awaitable[None]:
        assert envelope is not None
        refusal = self._refused_now.get(envelope.request_id)
        if refusal is not None:
            raise refusal
        failure = self._unconfirmed.get(envelope.request_id)

        async def confirmed() -> None:
            await asyncio.sleep(0)
            if failure is not None:
                raise failure

        return confirmed()


def kafka_wire(transport: QueueingKafka) -> KafkaClientWire:
    wire = KafkaClientWire.__new__(KafkaClientWire)  # no broker: only the send logic
    wire._transport = transport  # type: ignore[assignment]
    return wire


async def test_kafka_a_record_queued_then_not_confirmed_is_unconfirmed_not_unsent() -> None:
    wire = kafka_wire(
        QueueingKafka(
            refused_now={"2": MessageTooLarge(9, 5)},
            unconfirmed={"1": ConnectionClosed("leader lost"), "3": MessageTooLarge(9, 5)},
        )
    )
    failed = await wire.send("requests", [call(0), call(1), call(2), call(3)])
    assert outcomes(failed) == {
        "1": DeliveryUnconfirmed,  # it left for the broker: it may be delivered
        "2": MessageTooLarge,
        "3": MessageTooLarge,  # the broker refused it for its size: not written
    }


async def test_kafka_a_refusal_to_queue_means_it_and_every_later_frame_were_not_sent() -> None:
    wire = kafka_wire(QueueingKafka(refused_now={"1": ConnectionClosed("closed")}, unconfirmed={}))
    failed = await wire.send("requests", [call(0), call(1), call(2)])
    assert outcomes(failed) == {"1": ConnectionClosed, "2": ConnectionClosed}


class SendingSqs:
    """``SqsTransport.send``: the n-th send fails with the given error."""

    def __init__(self, failures: dict[str, BusError]) -> None:
        self._failures = failures
        self.sent: list[str] = []

    async def send(self, message: TransportMessage, envelope: Envelope | None = None) -> Any:
        assert envelope is not None
        failure = self._failures.get(envelope.request_id)
        if failure is not None:
            raise failure
        self.sent.append(envelope.request_id)


def sqs_wire(transport: SendingSqs) -> SqsClientWire:
    wire = SqsClientWire.__new__(SqsClientWire)
    wire._senders = {"pool": transport}  # type: ignore[dict-item]
    return wire


def read_timeout() -> ConnectionClosed:
    error = ConnectionClosed("read timed out")
    error.__cause__ = botocore.exceptions.ReadTimeoutError(endpoint_url="http://127.0.0.1")
    return error


def refused_connection() -> ConnectionClosed:
    error = ConnectionClosed("could not connect")
    refused = aiohttp.ClientConnectorError(
        SimpleNamespace(ssl=None),  # type: ignore[arg-type]  # only str() reads it
        ConnectionRefusedError(111, "Connection refused"),
    )
    error.__cause__ = botocore.exceptions.EndpointConnectionError(
        endpoint_url="http://x", error=refused
    )
    return error


async def test_sqs_a_send_without_an_answer_may_have_arrived_and_later_ones_were_not_sent() -> None:
    for failure in (BusTimeout("SQS send_message", 5), read_timeout()):
        sqs = SendingSqs({"1": failure})
        failed = await sqs_wire(sqs).send("pool", [call(0), call(1), call(2)])
        assert outcomes(failed) == {"1": DeliveryUnconfirmed, "2": type(failure)}
        assert sqs.sent == ["0"]


async def test_sqs_a_send_that_never_connected_was_not_sent() -> None:
    sqs = SendingSqs({"0": refused_connection(), "1": MessageTooLarge(9, 5)})
    failed = await sqs_wire(sqs).send("pool", [call(0), call(1)])
    assert outcomes(failed) == {"0": ConnectionClosed, "1": ConnectionClosed}
