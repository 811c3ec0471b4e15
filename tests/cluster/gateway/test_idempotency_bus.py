"""Idempotency keys end to end (README "Idempotency keys"): HTTP through the gateway to
a real bus on Ray, Kafka and SQS, where ``append`` writes one line per run to a file.

- the same key sent twice runs the tool once; both answers are the result, each with
  its own JSON-RPC id;
- the same key of another principal runs apart;
- the same key with other arguments is refused with 1011 and runs nothing;
- a keyed call whose HTTP client disconnects mid-run still completes, and the resend
  with the same key gets its answer without a second run.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import pytest_asyncio

from cluster.gateway.call_meta import META_KEY
from cluster.gateway.policy.tokens import hash_token
from tests.cluster.bus_helpers import bus_config, running_gateway
from tests.faults.broker_bus import Broker
from transports.errors import BusErrorCode

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

SHIP_7, SHIP_8 = "ship-7-secret-token-0123456789", "ship-8-secret-token-9876543210"
VERSION = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
}
BACKENDS = [
    pytest.param("ray", id="ray"),
    pytest.param("kafka", marks=pytest.mark.kafka, id="kafka"),
    pytest.param("sqs", marks=pytest.mark.sqs, id="sqs"),
]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """The backend and its settings (a broker started here, outside any event loop)."""
    kind: str = request.param
    if kind == "ray":
        return kind, {}
    fixture = "kafka_bootstrap" if kind == "kafka" else "sqs_endpoint"
    return kind, Broker(kind, request.getfixturevalue(fixture)).settings()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(backend: tuple[str, dict[str, Any]], ray_session: None) -> AsyncIterator[str]:
    """A gateway with two principals over a bus of one fault-server worker."""
    kind, broker = backend
    policy = {
        "tokens": [
            {"principal": "ship-7", "sha256": hash_token(SHIP_7)},
            {"principal": "ship-8", "sha256": hash_token(SHIP_8)},
        ],
        "allow": {"ship-7": ["*"], "ship-8": ["*"]},
    }
    pool = {
        "name": "faults",
        "server": "tests.faults.fault_server:server",
        "min_workers": 1,
        "max_workers": 1,
        "warm_spares": 0,
    }
    config = bus_config([pool], backend=kind, gateway={"policy": policy}, **broker)
    async with running_gateway(config) as url:
        yield url


def body(request_id: int, key: str, arguments: dict[str, Any]) -> dict[str, Any]:
    params = {"name": "append", "arguments": arguments, "_meta": {**META, META_KEY: key}}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def post(
    url: str, token: str, request_id: int, key: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """One stateless 2026-07-28 call, as the edge client sends it; the JSON-RPC answer."""
    headers = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": VERSION,
        "mcp-method": "tools/call",
        "mcp-name": "append",
        "authorization": f"Bearer {token}",
    }
    async with httpx.AsyncClient(timeout=120) as http:
        response = await http.post(url, json=body(request_id, key, arguments), headers=headers)
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [
            json.loads(line.removeprefix("data: "))
            for line in response.text.splitlines()
            if line.startswith("data: ")
        ]
        answer: dict[str, Any] = events[-1]
        return answer
    answered: dict[str, Any] = response.json()
    return answered


def runs(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def result_of(answer: dict[str, Any]) -> Any:
    assert "error" not in answer, answer
    return answer["result"]["structuredContent"]["result"]


async def test_a_key_sent_twice_runs_once_and_both_get_the_result_with_their_own_ids(
    gateway: str, tmp_path: Path
) -> None:
    path, key = tmp_path / "runs", f"order-{uuid.uuid4().hex[:8]}"
    arguments = {"key": "first", "path": str(path)}
    first = await post(gateway, SHIP_7, 11, key, arguments)
    second = await post(gateway, SHIP_7, 12, key, arguments)
    assert (first["id"], result_of(first)) == (11, "first")
    assert (second["id"], result_of(second)) == (12, "first")
    assert runs(path) == ["first"]


async def test_the_same_key_of_another_principal_runs_apart(gateway: str, tmp_path: Path) -> None:
    path, key = tmp_path / "runs", f"order-{uuid.uuid4().hex[:8]}"
    mine = await post(gateway, SHIP_7, 1, key, {"key": "seven", "path": str(path)})
    theirs = await post(gateway, SHIP_8, 2, key, {"key": "eight", "path": str(path)})
    assert (result_of(mine), result_of(theirs)) == ("seven", "eight")
    assert runs(path) == ["seven", "eight"]


async def test_a_key_reused_with_other_arguments_is_refused_and_runs_nothing(
    gateway: str, tmp_path: Path
) -> None:
    path, key = tmp_path / "runs", f"order-{uuid.uuid4().hex[:8]}"
    assert result_of(await post(gateway, SHIP_7, 1, key, {"key": "a", "path": str(path)})) == "a"
    refused = await post(gateway, SHIP_7, 2, key, {"key": "b", "path": str(path)})
    assert refused["id"] == 2
    assert refused["error"]["code"] == BusErrorCode.IDEMPOTENCY_KEY_REUSED
    assert refused["error"]["message"] == "idempotency key reused with different arguments"
    assert runs(path) == ["a"]


async def test_a_keyed_call_whose_client_disconnects_completes_and_its_resend_gets_the_answer(
    gateway: str, tmp_path: Path
) -> None:
    path, key = tmp_path / "runs", f"order-{uuid.uuid4().hex[:8]}"
    # The side effect first, then 3 s of work: the client leaves during the work.
    arguments = {"key": "left", "path": str(path), "seconds": 3.0}
    posting = asyncio.ensure_future(post(gateway, SHIP_7, 1, key, arguments))
    async with asyncio.timeout(60):
        while not runs(path):  # noqa: ASYNC110 - the condition is the worker's file
            await asyncio.sleep(0.05)
    posting.cancel()  # closes the connection mid-call
    await asyncio.gather(posting, return_exceptions=True)
    resent = await post(gateway, SHIP_7, 2, key, arguments)
    assert (resent["id"], result_of(resent)) == (2, "left")
    again = await post(gateway, SHIP_7, 3, key, arguments)  # answered from the ledger
    assert (again["id"], result_of(again)) == (3, "left")
    assert runs(path) == ["left"]
