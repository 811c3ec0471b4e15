"""SQS as operators run it: queues made beforehand (by URL), credentials from the AWS chain.

The bus uses an existing request queue as it is (never creating, reconfiguring or
deleting it), and finds its keys in a profile file rather than the environment.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioboto3
import pytest

from cluster.config import ConfigError, parse_config
from cluster.services.sqs import sqs_client_kwargs
from tests.cluster.bus_helpers import bus_config, running_bus
from transports.message import Request
from transports.sqs.transport import SqsConfig, SqsTransport

KIT = {"name": "kit", "server": "cluster.examples.testkit:server", "max_workers": 1}
PROFILE = "raybus-ops"


def problems_of(sqs: dict[str, Any], pools: list[str] | None = None) -> list[str]:
    data = {
        "name": "b",
        "backend": "sqs",
        "sqs": {"region": "eu-west-1", **sqs},
        "pools": [{"name": p, "tools": "pkg.tools"} for p in pools or ["p"]],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


@pytest.mark.parametrize(
    ("sqs", "expected"),
    [
        ({"queue_urls": {"p": "requests-p"}}, "sqs.queue_urls: p: 'requests-p' is not a queue URL"),
        ({"queue_urls": {"q": "https://sqs.eu-west-1.amazonaws.com/1/q"}}, "names no pool"),
        (
            {"fifo": True, "queue_urls": {"p": "https://sqs.eu-west-1.amazonaws.com/1/p"}},
            "sqs: queue_urls.p: fifo is True, so give a FIFO queue",
        ),
    ],
)
def test_bad_queue_urls_are_one_line_naming_the_field(sqs: dict[str, Any], expected: str) -> None:
    (problem,) = problems_of(sqs)
    assert expected in problem


@pytest.fixture
def profile_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keys only in a shared credentials file (a named profile), none in the environment."""
    for name in [n for n in os.environ if n.startswith("AWS_") and n != "AWS_CA_BUNDLE"]:
        monkeypatch.delenv(name)
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[{PROFILE}]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = from-a-file\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
async def existing_queue(sqs_endpoint: str) -> AsyncIterator[str]:
    """A queue made by someone else (named outside any raybus prefix); its URL."""
    name = f"ops-made-{uuid.uuid4().hex[:10]}"
    async with aioboto3.Session().client("sqs", **sqs_client_kwargs(sqs_endpoint)) as sqs:
        url: str = (await sqs.create_queue(QueueName=name))["QueueUrl"]
        try:
            yield url
        finally:
            await sqs.delete_queue(QueueUrl=url)


async def queue_names(endpoint: str, prefix: str) -> list[str]:
    async with aioboto3.Session().client("sqs", **sqs_client_kwargs(endpoint)) as sqs:
        reply = await sqs.list_queues(QueueNamePrefix=prefix)
    return [url.rsplit("/", 1)[-1] for url in reply.get("QueueUrls", [])]


@pytest.mark.sqs
@pytest.mark.usefixtures("profile_only")
async def test_a_transport_uses_an_existing_queue_with_keys_from_a_profile(
    sqs_endpoint: str, existing_queue: str, unique_name: str
) -> None:
    # No keys given: botocore finds the profile's, as it would on an operator's machine.
    config = SqsConfig(
        endpoint_url=sqs_endpoint,
        queue_prefix=f"{unique_name}-",
        send_queue="requests",
        receive_queue="requests",
        aws_profile=PROFILE,
        queue_urls={"requests": existing_queue},
        wait_time_seconds=1,
    )
    sent = Request(id=1, method="tools/call", params={"name": "echo"})
    async with asyncio.timeout(60), SqsTransport(config) as end:
        await end.send(sent)
        delivery = await end.receive()
        await delivery.ack()
        assert delivery.message == sent
        assert await end.queue_depth("requests") == 0
    assert await queue_names(sqs_endpoint, unique_name) == []  # nothing was created


@pytest.mark.sqs
@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.usefixtures("profile_only")
async def test_a_bus_serves_a_pool_from_an_existing_queue_with_profile_keys(
    ray_session: None, sqs_endpoint: str, existing_queue: str
) -> None:
    config = bus_config(
        [KIT],
        backend="sqs",
        sqs={
            "endpoint_url": sqs_endpoint,
            "aws_profile": PROFILE,
            "queue_urls": {"kit": existing_queue},
            "wait_time_seconds": 1,
        },
    )
    async with asyncio.timeout(180), running_bus(config) as client:
        results = await client.map_tool_calls(
            [("echo", {"text": f"via {i}"}) for i in range(10)], concurrency=4, timeout_s=120
        )
        assert [r.structured_content for r in results] == [  # type: ignore[union-attr]
            {"result": f"via {i}"} for i in range(10)
        ]
        # The pool's requests went through the operator's queue: no queue of its own.
        assert await queue_names(sqs_endpoint, f"{config.name}-requests") == []
