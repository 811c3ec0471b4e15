"""The shared transport contract, run over real SQS queues (moto server).

Every test of ``tests/transports/test_contract.py`` is imported and runs here against a
pair of :class:`SqsTransport` ends wired crosswise over two standard queues (a -> b and
b -> a). The declared capabilities decide what applies: standard queues are unordered
(the order assertions skip themselves) and a queue's receiver cannot see one sender's
close (``peer_close_visible`` is False: after draining, receive keeps waiting).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aioboto3
import pytest

from tests.transports.pairs import CONTRACT_LIMITS, TransportPair
from tests.transports.test_contract import *  # noqa: F403
from transports.sqs.transport import SqsConfig, SqsTransport

pytestmark = pytest.mark.sqs

_REGION = "us-east-1"
_DUMMY = "testing"  # moto accepts any credentials; never send real ones to it


def contract_config(endpoint: str, prefix: str, send: str, receive: str) -> SqsConfig:
    return SqsConfig(
        endpoint_url=endpoint,
        region=_REGION,
        queue_prefix=prefix,
        send_queue=send,
        receive_queue=receive,
        wait_time_seconds=1,
        # The contract never acks; a visibility timeout longer than any test keeps the
        # per-delivery extension tasks idle instead of loading the endpoint.
        visibility_timeout_s=120,
        max_message_bytes=CONTRACT_LIMITS.max_message_bytes,
        max_depth=CONTRACT_LIMITS.max_depth,
        aws_access_key_id=_DUMMY,
        aws_secret_access_key=_DUMMY,
    )


@pytest.fixture  # type: ignore[no-redef]  # replaces the imported fixture
async def pair(sqs_endpoint: str, unique_name: str) -> AsyncIterator[TransportPair]:
    prefix = f"{unique_name}-"
    a = SqsTransport(contract_config(sqs_endpoint, prefix, "a-to-b", "b-to-a"))
    b = SqsTransport(contract_config(sqs_endpoint, prefix, "b-to-a", "a-to-b"))
    session = aioboto3.Session(
        aws_access_key_id=_DUMMY, aws_secret_access_key=_DUMMY, region_name=_REGION
    )
    async with session.client("sqs", endpoint_url=sqs_endpoint) as raw:
        await a.start()
        await b.start()
        inbound_of_b: str = (await raw.get_queue_url(QueueName=f"{prefix}a-to-b"))["QueueUrl"]

        async def inject(frame: bytes) -> None:
            await raw.send_message(QueueUrl=inbound_of_b, MessageBody=frame.decode("utf-8"))

        try:
            yield TransportPair(a, b, inject)
        finally:
            await a.close()
            await b.close()
            listed = await raw.list_queues(QueueNamePrefix=prefix)
            for url in listed.get("QueueUrls", []):
                await raw.delete_queue(QueueUrl=url)
