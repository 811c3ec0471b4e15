"""An event trigger over SQS queues (a real moto server) and a real Ray."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aioboto3
import pytest

from cluster.bus import bus_status, launch_bus, stop_bus
from cluster.services.sqs import sqs_client_kwargs
from tests.cluster.bus_helpers import bus_config

pytestmark = [pytest.mark.sqs, pytest.mark.ray]

POOL = {
    "name": "work",
    "server": "tests.cluster.trigger_server:server",
    "min_workers": 1,
    "max_workers": 1,
}
_WAIT_S = 180.0  # a cold, loaded 2-core machine: stops a hang, measures nothing


async def drain_queue(sqs: Any, url: str, want: int) -> list[dict[str, Any]]:
    """Receive (and delete) messages until ``want`` distinct ones arrived."""
    seen: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(_WAIT_S):
        while len(seen) < want:
            reply = await sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
            )
            for message in reply.get("Messages", []):
                seen[message["MessageId"]] = message
                await sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return list(seen.values())


async def lag_drained(bus: str) -> dict[str, Any]:
    async with asyncio.timeout(_WAIT_S):
        while (row := (await bus_status(bus))["triggers"]["work"])["lag"] != 0:  # noqa: ASYNC110
            await asyncio.sleep(0.5)  # polling the actor's counters
    trigger: dict[str, Any] = row
    return trigger


def token_of(body: str) -> str:
    structured = json.loads(body)  # the tool's structuredContent (format: structured)
    token = structured.get("token") or structured["result"]["token"]
    assert isinstance(token, str)
    return token


def trigger_attribute(message: dict[str, Any]) -> dict[str, Any]:
    raw = message["MessageAttributes"]["raybus-trigger"]["StringValue"]
    decoded: dict[str, Any] = json.loads(raw)
    return decoded


async def test_messages_on_a_queue_call_the_tool_and_land_in_output_and_dead_letter_queues(
    ray_session: None, sqs_endpoint: str, unique_name: str, tmp_path: Path
) -> None:
    queue, path = unique_name, tmp_path / "runs"
    config = bus_config(
        [POOL],
        sqs={"endpoint_url": sqs_endpoint},
        triggers=[
            {
                "name": "work",
                "source": {"sqs": {"queue": queue}},
                "tool": "work",
                "arguments": {"token": "${value.token}", "path": str(path), "gate": ""},
                "output": {"sqs": {"queue": f"{queue}-out"}, "format": "structured"},
            }
        ],
    )
    async with aioboto3.Session().client("sqs", **sqs_client_kwargs(sqs_endpoint)) as sqs:
        source = (await sqs.create_queue(QueueName=queue))["QueueUrl"]
        await launch_bus(config)
        try:
            for i in range(20):
                body = json.dumps({"token": f"t{i}"})
                attributes = {"shop": {"DataType": "String", "StringValue": "berlin"}}
                await sqs.send_message(
                    QueueUrl=source, MessageBody=body, MessageAttributes=attributes
                )
            await sqs.send_message(QueueUrl=source, MessageBody="not json")
            output = (await sqs.get_queue_url(QueueName=f"{queue}-out"))["QueueUrl"]
            dead = (await sqs.get_queue_url(QueueName=f"{queue}-dlq"))["QueueUrl"]
            outputs = await drain_queue(sqs, output, 20)
            (letter,) = await drain_queue(sqs, dead, 1)
            row = await lag_drained(config.name)
        finally:
            await stop_bus(config.name)
    tokens = sorted(token_of(m["Body"]) for m in outputs)
    assert tokens == sorted(f"t{i}" for i in range(20))
    assert sorted(path.read_text().split()) == tokens  # each ran once
    keys = {trigger_attribute(m)["raybus-trigger-key"] for m in outputs}
    assert len(keys) == 20
    assert all(key.startswith(f"sqs/{queue}/") for key in keys)
    assert letter["Body"] == "not json"  # the message itself, unchanged
    why = trigger_attribute(letter)
    assert why["raybus-error-stage"] == "mapping"
    assert why["raybus-error-message"] == "the record has no value.token"
    assert (row["ok"], row["dead_lettered"], row["source"]) == (20, 1, f"sqs:{queue}")
