"""End-to-end encryption on real brokers: calls work, and the raw records hold no plaintext.

Each test reads what the broker holds (Kafka records with keys and headers, SQS bodies
and message attributes) and looks for the tool names, the arguments and the results in
clear. A positive control opens the same raw bytes with the bus's keys and finds them,
so the search is known to look at the right data.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import uuid
from typing import Any

import pytest

from cluster.backends.kafka import topics_for
from cluster.backends.sealed import SealedClientWire, channel_for
from cluster.backends.sqs import SqsClientWire, _sqs_config, request_queue
from cluster.config import BusConfig
from tests.cluster.bus_helpers import bus_config, running_bus
from transports.codec import decode_message, encode_message
from transports.crypto.seal import Direction, open_sealed
from transports.envelope import Envelope
from transports.frame import Frame
from transports.message import Request, Response
from transports.sqs.transport import SqsTransport

pytestmark = [pytest.mark.ray, pytest.mark.slow]

KIT = {"name": "kit", "server": "cluster.examples.testkit:server", "max_concurrency": 8}
TOOLS = (b"count_with_progress", b"echo", b"tools/call")


def _encrypted(monkeypatch: pytest.MonkeyPatch, **backend: Any) -> BusConfig:
    monkeypatch.setenv("RAYBUS_TEST_KEY_K1", base64.b64encode(os.urandom(32)).decode())
    return bus_config(
        [{**KIT, "min_workers": 1, "max_workers": 1}],
        encryption={"key_id": "k1", "keys": {"k1": "${RAYBUS_TEST_KEY_K1}"}},
        **backend,
    )


# A sealed frame's ciphertext in base64: a long run of its alphabet (no plaintext field
# of these frames makes one; the canary's "-" and the tools' "_" or quotes break runs).
_CIPHERTEXT = re.compile(rb"[A-Za-z0-9+/]{64,}={0,2}")


def _opened_ciphertext(run: re.Match[bytes]) -> bytes:
    # Base64 of random bytes spells "echo" by chance now and then (it failed a run
    # here); the decoded bytes hold a 4-byte secret with odds of 2^-32 per position.
    try:
        return base64.b64decode(run.group(), validate=True)
    except ValueError:
        return run.group()  # not base64 after all: searched as it is


def _assert_no_plaintext(blobs: list[bytes], canary: bytes) -> None:
    assert blobs
    for blob in blobs:
        searched = _CIPHERTEXT.sub(_opened_ciphertext, blob)
        for secret in (canary, *TOOLS):
            assert secret not in searched, f"{secret!r} in clear in {blob[:200]!r}"


@pytest.mark.kafka
async def test_kafka_records_hold_no_tool_name_argument_or_result(
    ray_session: None, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    canary = f"canary-{uuid.uuid4().hex}"
    config = _encrypted(monkeypatch, backend="kafka", kafka={"bootstrap": kafka_bootstrap})
    async with running_bus(config) as client:
        echoed = await client.call_tool("echo", {"text": canary}, timeout_s=120)
        counted = await client.call_tool("count_with_progress", {"steps": 2}, timeout_s=120)
        calls = [("echo", {"text": f"{canary}-{i}"}) for i in range(20)]
        many = await client.map_tool_calls(calls, concurrency=8, timeout_s=120)
    assert echoed.structured_content == {"result": canary}
    assert counted.structured_content == {"result": 2}
    assert [r.structured_content for r in many] == [  # type: ignore[union-attr]
        {"result": f"{canary}-{i}"} for i in range(20)
    ]

    prefix = topics_for(config).prefix
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[Any] = []
    try:
        # The consumer's own metadata holds only assigned topics: ask for all of them.
        cluster = await consumer._client.fetch_all_metadata()
        topics = sorted(t for t in cluster.topics() if t.startswith(prefix))
        partitions = [
            TopicPartition(t, p) for t in topics for p in cluster.partitions_for_topic(t) or ()
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        async with asyncio.timeout(120):
            while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    blobs = [
        b"|".join(
            [r.topic.encode(), r.key or b"", r.value or b""]
            + [name.encode() + b"=" + (value or b"") for name, value in r.headers]
        )
        for r in records
    ]
    # Requests, answers, progress and heartbeats were all read.
    requests_topic = topics_for(config).requests_for_capability("kit")
    assert sum(r.topic == requests_topic for r in records) >= 22
    assert any(r.topic == topics_for(config).discovery_topic() for r in records)
    _assert_no_plaintext(blobs, canary.encode())

    # Positive control: the bus's key opens every raw request record, and the echo calls'
    # ones hold the argument (records come partition by partition: any order).
    assert config.encryption is not None
    opened = [
        open_sealed(
            config.encryption.keyring(),
            decode_message(r.value),
            Envelope.from_headers({name: value.decode() for name, value in r.headers}),
            direction=Direction.TO_WORKER,
            destinations=frozenset({requests_topic}),
        )
        for r in records
        if r.topic == requests_topic
    ]
    assert sum(canary.encode() in o.body for o in opened) >= 21  # echo, and the 20 of many
    assert {o.envelope.name for o in opened if o.envelope} == {"echo", "count_with_progress"}


async def _raw_messages(probe: SqsTransport, url: str, at_least: int) -> list[dict[str, Any]]:
    """Every message in queue ``url`` with its attributes, left in it (visibility 0)."""
    found: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(120):
        while len(found) < at_least:
            reply = await probe._sqs(
                "receive_message",
                url,
                wait_s=1,
                QueueUrl=url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=0,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
            )
            for message in reply.get("Messages", []):
                found[message["MessageId"]] = message
    return list(found.values())


def _sqs_blob(message: dict[str, Any]) -> bytes:
    attributes = message.get("MessageAttributes", {})
    parts = [message["Body"]] + [
        f"{name}={value.get('StringValue', '')}" for name, value in attributes.items()
    ]
    return "|".join(parts).encode()


@pytest.mark.sqs
async def test_sqs_bodies_and_attributes_hold_no_tool_name_argument_or_result(
    ray_session: None, sqs_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    config = _encrypted(
        monkeypatch,
        backend="sqs",
        sqs={
            "endpoint_url": sqs_endpoint,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        },
    )
    async with running_bus(config) as client:
        echoed = await client.call_tool("echo", {"text": canary}, timeout_s=120)
        assert echoed.structured_content == {"result": canary}
        counted = await client.call_tool("count_with_progress", {"steps": 2}, timeout_s=120)
        assert counted.structured_content == {"result": 2}

        # The bus deletes what it answered, so a probe client (the same sealing wire as
        # every client) leaves its messages where the test can read them: a request on
        # a queue no worker reads, and the worker's answer on the probe's reply queue.
        channel = channel_for(config, "probe", Direction.TO_WORKER)
        assert channel is not None
        wire = SealedClientWire(SqsClientWire(config, "probe"), channel)
        probe = SqsTransport(_sqs_config(config))
        await wire.start()
        await probe.start()
        try:
            envelope = Envelope(
                client_id="probe",
                request_id=uuid.uuid4().hex,
                reply_to=wire.reply_to,
                method="tools/call",
                name="echo",
            )
            body = encode_message(
                Request(
                    id=1,
                    method="tools/call",
                    params={"name": "echo", "arguments": {"text": canary}},
                )
            )
            frame = Frame(envelope, body)
            assert await wire.send("nobody-reads", [frame]) == []
            assert await wire.send("kit", [frame]) == []
            parked_url = await probe.ensure_queue(request_queue("nobody-reads"), owner=False)
            parked = await _raw_messages(probe, parked_url, 1)
            answers = await _raw_messages(probe, await probe._url_of(wire.reply_to), 1)
            _assert_no_plaintext([_sqs_blob(m) for m in parked + answers], canary.encode())

            # Positive control: the probe opens the worker's answer and finds the result.
            async with asyncio.timeout(120):
                delivery = await wire.next_delivery()
            assert isinstance(delivery.message, Response)
            assert canary in str(delivery.message.result)
            await delivery.ack()
        finally:
            await wire.close()
            await probe.close()
