"""The bus with SQS between clients and workers, on the moto endpoint and a real Ray."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import mcp
import pytest

from cluster.backends.sqs import _sqs_config, request_queue
from cluster.client import CallError
from tests.cluster.bus_helpers import bus_config, running_bus, running_gateway
from tests.waiting import wait_until
from transports.errors import BusErrorCode
from transports.sqs.transport import SqsTransport

pytestmark = [pytest.mark.sqs, pytest.mark.ray, pytest.mark.slow]

KIT = {"name": "kit", "server": "cluster.examples.testkit:server"}
# Imported only inside workers (importing it here would wrap this process's broker source).
EXIT_BEFORE_ACK = "tests.cluster.exit_before_ack:server"


def sqs_config(endpoint: str, workers: int = 1, server: str = KIT["server"], **sqs: Any) -> Any:
    pool = {**KIT, "server": server, "min_workers": workers, "max_workers": 2}
    return bus_config(
        [{**pool, "max_concurrency": 16}],
        backend="sqs",
        sqs={
            "endpoint_url": endpoint,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            **sqs,
        },
    )


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_an_mcp_client_reaches_workers_over_sqs_with_progress(
    ray_session: None, sqs_endpoint: str
) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with (
        running_gateway(sqs_config(sqs_endpoint)) as url,
        mcp.Client(url, mode="legacy") as client,
    ):
        result = await client.call_tool(
            "count_with_progress", {"steps": 3}, progress_callback=on_progress
        )
        echoed = await client.call_tool("echo", {"text": "over sqs"})
    assert result.structured_content == {"result": 3}
    assert seen == [1, 2, 3]
    assert echoed.structured_content == {"result": "over sqs"}


async def test_a_tool_outliving_the_visibility_timeout_runs_once(
    ray_session: None, sqs_endpoint: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "executions"
    async with running_bus(sqs_config(sqs_endpoint, 2, visibility_timeout_s=1)) as client:
        result = await client.call_tool(
            "record", {"path": str(ledger), "token": "slow", "seconds": 4}, timeout_s=60
        )
    assert result.structured_content == {"result": "slow"}
    assert lines(ledger) == ["slow"]


async def test_a_worker_dying_mid_call_leaves_the_request_answered_once(
    ray_session: None, sqs_endpoint: str
) -> None:
    config = sqs_config(sqs_endpoint, 2, visibility_timeout_s=2, duplicate_wait_s=3)
    async with running_bus(config) as client:
        with pytest.raises(CallError) as caught:
            await client.call_tool("die", {}, timeout_s=60)
        # It reappeared after the visibility timeout on the other worker, which found the
        # dead worker's run in the ledger: an explicit "may have run", never a second run.
        assert caught.value.code == BusErrorCode.OUTCOME_UNKNOWN
        assert (await client.call_tool("echo", {"text": "alive"})).structured_content == {
            "result": "alive"
        }


async def test_a_worker_dying_before_its_delete_is_not_run_twice(
    ray_session: None, sqs_endpoint: str, tmp_path: Path
) -> None:
    ledger = tmp_path / "executions"
    # The worker that runs `record` exits after answering it, before deleting it.
    config = sqs_config(sqs_endpoint, 2, server=EXIT_BEFORE_ACK, visibility_timeout_s=2)
    async with running_bus(config) as client:
        result = await client.call_tool(
            "record", {"path": str(ledger), "token": "once"}, timeout_s=60
        )
        assert result.structured_content == {"result": "once"}
        await wait_until(lambda: (tmp_path / "executions.exited").exists(), timeout_s=30)
        # After its visibility timeout the message went to the surviving worker, which
        # answered from the ledger and deleted it: the tool ran once, the queue is empty.
        probe = SqsTransport(_sqs_config(config, send_queue=request_queue("kit")))
        await probe.start()
        try:
            async with asyncio.timeout(60):
                while await probe.queue_depth(request_queue("kit")) > 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.5)  # polling the endpoint
        finally:
            await probe.close()
        assert lines(ledger) == ["once"]


async def test_a_poison_message_reaches_the_dlq_after_max_receive_count(
    ray_session: None, sqs_endpoint: str
) -> None:
    config = sqs_config(sqs_endpoint, 1, visibility_timeout_s=1, max_receive_count=2)
    async with running_bus(config):
        probe = SqsTransport(_sqs_config(config, send_queue=request_queue("kit")))
        await probe.start()
        try:
            await probe._sqs(
                "send_message",
                probe._send_url or "",
                QueueUrl=probe._send_url,
                MessageBody="not json at all",
            )
            async with asyncio.timeout(60):
                while await probe.queue_depth(request_queue("kit"), dead_letter=True) < 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.5)  # polling the endpoint
        finally:
            await probe.close()


async def test_an_oversized_request_gets_a_clear_error(
    ray_session: None, sqs_endpoint: str
) -> None:
    async with running_bus(sqs_config(sqs_endpoint)) as client:
        with pytest.raises(CallError) as caught:
            await client.call_tool("echo", {"text": "x" * 300_000}, timeout_s=30)
    assert caught.value.code == -32600
    assert "over" in caught.value.message


async def test_a_bus_on_the_local_endpoint_starts_with_no_aws_credentials_anywhere(
    ray_session: None, sqs_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As README shows it: the endpoint `raybus services up` printed, and nothing else.
    for name in [n for n in os.environ if n.startswith("AWS_") and n != "AWS_CA_BUNDLE"]:
        monkeypatch.delenv(name)
    config = bus_config(
        [{**KIT, "max_workers": 1}], backend="sqs", sqs={"endpoint_url": sqs_endpoint}
    )
    async with asyncio.timeout(120), running_bus(config) as client:
        echoed = await client.call_tool("echo", {"text": "no keys needed"})
    assert echoed.structured_content == {"result": "no keys needed"}
