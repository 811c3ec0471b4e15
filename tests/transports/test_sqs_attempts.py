"""What a failed SQS call tells its caller, and which failures ``call_sqs`` tries again.

A real aiobotocore client talks to a scripted endpoint on 127.0.0.1 that answers each
request as told (drops the connection after reading it, throttles, fails inside, or
answers), or to a port nobody listens on. A send is tried again only when SQS surely
did not take it: the CI run that found this had a caller told "not sent" whose call ran,
because botocore's own retry hid the first attempt's dropped connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aioboto3
import botocore.exceptions
import pytest
from pydantic import SecretStr

from cluster.backends.sqs import _may_have_arrived
from transports.errors import BusError, ConnectionClosed
from transports.sqs.wire import SqsConfig, botocore_config, call_sqs, may_have_reached_sqs

BOUND_S = 30.0
QUEUE_URL = "http://127.0.0.1/000000000000/q"


class ScriptedEndpoint:
    """Answers the n-th request as ``script[n]`` says (then "ok"); counts requests."""

    def __init__(self, script: list[str]) -> None:
        self.script = list(script)
        self.requests: list[str] = []  # the X-Amz-Target of each request read
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = dict(
                    line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
                )
                lowered = {key.lower(): value for key, value in headers.items()}
                body = await reader.readexactly(int(lowered.get("content-length", "0")))
                self.requests.append(lowered.get("x-amz-target", ""))
                step = self.script.pop(0) if self.script else "ok"
                if step == "drop":  # read, then gone without an answer: SQS may have it
                    writer.close()
                    return
                writer.write(_answer(step, json.loads(body or b"{}")))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _answer(step: str, request: dict[str, Any]) -> bytes:
    status, payload = {
        "throttle": (400, {"__type": "com.amazonaws.sqs#RequestThrottled", "message": "slow"}),
        "fail": (500, {"__type": "com.amazonaws.sqs#InternalError", "message": "oops"}),
    }.get(step, (200, _success(request)))
    body = json.dumps(payload).encode()
    head = (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.0\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _success(request: dict[str, Any]) -> dict[str, Any]:
    if "MessageBody" in request:  # botocore checks the digest of what it sent
        digest = hashlib.md5(request["MessageBody"].encode()).hexdigest()  # the digest SQS uses
        return {"MessageId": "m-1", "MD5OfMessageBody": digest}
    return {"QueueUrl": QUEUE_URL}


@asynccontextmanager
async def sqs_client(endpoint_url: str) -> AsyncIterator[Any]:
    config = SqsConfig(
        endpoint_url=endpoint_url,
        request_timeout_s=10,
        aws_access_key_id=SecretStr("testing"),  # the scripted endpoint checks none
        aws_secret_access_key=SecretStr("testing"),
    )
    session = aioboto3.Session(**config.session_options())
    async with session.client(
        "sqs", endpoint_url=endpoint_url, config=botocore_config(config)
    ) as client:
        yield client


@asynccontextmanager
async def scripted(script: list[str]) -> AsyncIterator[tuple[ScriptedEndpoint, Any]]:
    endpoint = ScriptedEndpoint(script)
    await endpoint.start()
    try:
        async with sqs_client(endpoint.url) as client:
            yield endpoint, client
    finally:
        await endpoint.stop()


async def send(client: Any) -> Any:
    return await call_sqs(
        client, "send_message", "q", timeout_s=BOUND_S, QueueUrl=QUEUE_URL, MessageBody="hi"
    )


async def failure_of(call: Any) -> BusError:
    with pytest.raises(BusError) as caught:
        await call
    return caught.value


async def test_a_send_whose_connection_dropped_mid_request_is_tried_once_and_may_have_arrived() -> (
    None
):
    async with scripted(["drop", "ok"]) as (endpoint, client):
        error = await failure_of(send(client))
    assert endpoint.requests == ["AmazonSQS.SendMessage"]  # one attempt: a retry could repeat it
    assert isinstance(error.__cause__, botocore.exceptions.ConnectionClosedError)
    assert may_have_reached_sqs(error.__cause__)
    assert _may_have_arrived(error)


async def test_a_send_that_failed_inside_sqs_is_not_retried_and_may_have_arrived() -> None:
    async with scripted(["fail", "ok"]) as (endpoint, client):
        error = await failure_of(send(client))
    assert len(endpoint.requests) == 1
    assert _may_have_arrived(error)


async def test_a_throttled_send_is_tried_again_and_goes_through() -> None:
    async with scripted(["throttle", "throttle"]) as (endpoint, client):
        reply = await send(client)
    assert reply["MessageId"] == "m-1"
    assert len(endpoint.requests) == 3


async def test_a_send_throttled_every_time_was_not_sent() -> None:
    async with scripted(["throttle"] * 3) as (endpoint, client):
        error = await failure_of(send(client))
    assert len(endpoint.requests) == 3
    assert isinstance(error, ConnectionClosed)
    assert not _may_have_arrived(error)


async def test_a_lookup_whose_connection_dropped_is_tried_again() -> None:
    # Reading a queue's URL changes nothing, so any lost attempt may be repeated.
    async with scripted(["drop", "fail"]) as (endpoint, client):
        reply = await call_sqs(client, "get_queue_url", "q", timeout_s=BOUND_S, QueueName="q")
    assert reply["QueueUrl"] == QUEUE_URL
    assert endpoint.requests == ["AmazonSQS.GetQueueUrl"] * 3


async def test_a_send_to_a_port_nobody_listens_on_was_not_sent() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: connecting is refused
    async with sqs_client(f"http://127.0.0.1:{port}") as client:
        error = await failure_of(send(client))
    assert isinstance(error, ConnectionClosed)
    assert isinstance(error.__cause__, botocore.exceptions.EndpointConnectionError)
    assert not may_have_reached_sqs(error.__cause__)
    assert not _may_have_arrived(error)
