"""Smoke test of the real SQS endpoint (moto server) the test session runs."""

from __future__ import annotations

import socket

import aioboto3
import pytest

from cluster.services import sqs as sqs_module
from cluster.services.process import LOOPBACK, free_port
from cluster.services.sqs import SqsService, sqs_client_kwargs, sqs_list_queues

pytestmark = pytest.mark.sqs


async def test_a_queue_holds_a_message_until_it_is_deleted_and_can_be_deleted(
    sqs_endpoint: str, unique_name: str
) -> None:
    session = aioboto3.Session()
    async with session.client("sqs", **sqs_client_kwargs(sqs_endpoint)) as sqs:
        queue_url: str = (await sqs.create_queue(QueueName=unique_name))["QueueUrl"]
        try:
            await sqs.send_message(
                QueueUrl=queue_url,
                MessageBody='{"jsonrpc": "2.0", "id": 1, "method": "ping"}',
                MessageAttributes={"client_id": {"DataType": "String", "StringValue": "c-1"}},
            )
            received = await sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=1,
                WaitTimeSeconds=5,
                MessageAttributeNames=["All"],
            )
            [message] = received["Messages"]
            assert message["Body"] == '{"jsonrpc": "2.0", "id": 1, "method": "ping"}'
            assert message["MessageAttributes"]["client_id"]["StringValue"] == "c-1"

            await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            attributes = await sqs.get_queue_attributes(
                QueueUrl=queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )
            assert attributes["Attributes"] == {
                "ApproximateNumberOfMessages": "0",
                "ApproximateNumberOfMessagesNotVisible": "0",
            }
        finally:
            await sqs.delete_queue(QueueUrl=queue_url)
        listed = await sqs.list_queues(QueueNamePrefix=unique_name)
        assert queue_url not in listed.get("QueueUrls", [])


async def test_a_port_taken_before_the_server_binds_it_is_retried_on_a_new_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind((LOOPBACK, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken, free_port()])
        monkeypatch.setattr(sqs_module, "free_port", lambda: next(ports))
        service = SqsService(ready_timeout_s=60)

        await service.start()
        try:
            assert service.endpoint != f"http://{LOOPBACK}:{taken}"
            assert await sqs_list_queues(service.endpoint) == []
        finally:
            await service.stop()
