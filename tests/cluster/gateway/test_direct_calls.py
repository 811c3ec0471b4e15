"""The direct path for 2026-07-28 tool calls answers exactly as the SDK's path does.

The gateway's HTTP app is served by uvicorn over a fake bus (no Ray). Each request is
sent twice: once as it is served now, and once with the direct path switched off, so the
SDK's own Streamable HTTP path answers it. Status, content type and the JSON-RPC
messages must match; the bus must see the same calls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2 as httpx
import mcp
import pytest

from actors.discovery.catalog import Catalog
from cluster.gateway import direct_calls
from cluster.gateway.bus import MessageHandler
from cluster.gateway.server import Gateway
from tests.cluster.gateway.fake_bus import FakeBus, Tool, echo, fake_bus, text_result
from tests.cluster.gateway.serving import serving
from transports.errors import BusErrorCode
from transports.message import Notification, Request

VERSION = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
}
HEADERS = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": VERSION,
}


async def chatty(params: dict[str, Any], on_message: MessageHandler | None) -> dict[str, Any]:
    """Logs, then asks the client something: the era has no back channel for that."""
    assert on_message is not None
    log = {"level": "info", "data": "working"}
    await on_message(Notification(method="notifications/message", params=log))
    sampling = {"messages": [], "maxTokens": 10}
    await on_message(Request(id="s1", method="sampling/createMessage", params=sampling))
    return text_result("unreachable")


async def invalid(params: dict[str, Any], on_message: MessageHandler | None) -> dict[str, Any]:
    return {"content": "not a list"}


async def input_required(
    params: dict[str, Any], on_message: MessageHandler | None
) -> dict[str, Any]:
    return {
        "resultType": "input_required",
        "inputRequests": {"q": {"method": "roots/list"}},
        "requestState": "opaque",
    }


def bus(**tools: Tool) -> FakeBus:
    fake = fake_bus()
    more = {"chatty": chatty, "invalid": invalid, "input_required": input_required, **tools}
    fake.tools.update(more)
    listed = [{"name": name, "inputSchema": {"type": "object"}} for name in more]
    fake.tools["route"] = echo
    region = {"type": "string", "x-mcp-header": "Region"}
    listed.append(
        {"name": "route", "inputSchema": {"type": "object", "properties": {"region": region}}}
    )
    fake.catalog = Catalog.of(tools=[*fake.catalog.tools, *listed], prompts=[*fake.catalog.prompts])
    return fake


@contextmanager
def sdk_path_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with monkeypatch.context() as patch:

        async def never(self: object, scope: object) -> None:
            return None

        patch.setattr(direct_calls.DirectToolCalls, "_take", never)
        # The SDK as it is out of the box: Mcp-Param headers checked against a listing.
        patch.setattr(Gateway, "input_schema", None)
        yield


def call(name: str, arguments: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "_meta": dict(META), **extra}
    if arguments is not None:
        params["arguments"] = arguments
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}


def messages(response: httpx.Response) -> list[dict[str, Any]]:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return [
            json.loads(line[len("data: ") :])
            for line in response.text.splitlines()
            if line.startswith("data: ")
        ]
    return [response.json()] if response.content else []


async def exchange(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    extra: list[tuple[str, str]] | None = None,
) -> tuple[Any, ...]:
    async with httpx.AsyncClient(timeout=30) as http:
        sent = [*{**HEADERS, **headers}.items(), *(extra or [])]
        response = await http.post(url, json=body, headers=sent)
    kind = response.headers.get("content-type", "").split(";")[0]
    return response.status_code, kind, messages(response)


ROUTE = {"mcp-name": "route"}
CASES: list[tuple[str, dict[str, Any], dict[str, str], list[tuple[str, str]]]] = [
    (
        "a param header that fits",
        call("route", {"region": "eu"}),
        ROUTE,
        [("mcp-param-region", "eu")],
    ),
    (
        "a param header that differs",
        call("route", {"region": "eu"}),
        ROUTE,
        [("mcp-param-region", "us")],
    ),
    ("a param header missing", call("route", {"region": "eu"}), ROUTE, []),
    (
        "a param header twice",
        call("route", {"region": "eu"}),
        ROUTE,
        [("mcp-param-region", "eu")] * 2,
    ),
    ("a param header without its argument", call("route", {}), ROUTE, [("mcp-param-region", "eu")]),
]
CASES += [
    (label, body, headers, [])
    for label, body, headers in [
        ("a plain call", call("echo", {"text": "hi"}), {"mcp-name": "echo"}),
        ("no arguments", call("echo"), {"mcp-name": "echo"}),
        (
            "progress",
            call("count", {"steps": 3}, _meta={**META, "progressToken": "t"}),
            {"mcp-name": "count"},
        ),
        ("a bus error", call("overloaded", {}), {"mcp-name": "overloaded"}),
        ("an unknown tool", call("nope", {}), {"mcp-name": "nope"}),
        ("a log, then a server request", call("chatty", {}), {"mcp-name": "chatty"}),
        ("a result the schema refuses", call("invalid", {}), {"mcp-name": "invalid"}),
        ("input required", call("input_required", {}), {"mcp-name": "input_required"}),
        ("invalid arguments", call("echo", {"text": 5}), {"mcp-name": "echo"}),
        ("a name header that disagrees", call("echo", {"text": "hi"}), {"mcp-name": "count"}),
        ("no name header", call("echo", {"text": "hi"}), {}),
        (
            "a version header that disagrees",
            call("echo", {"text": "x"}),
            {"mcp-protocol-version": "2099-01-01"},
        ),
        (
            "params that break the schema",
            {**call("echo"), "params": {"name": 5, "_meta": META}},
            {},
        ),
    ]
]


@pytest.mark.parametrize(("label", "body", "headers", "extra"), CASES, ids=[c[0] for c in CASES])
async def test_the_direct_path_answers_as_the_sdk_does(
    label: str,
    body: dict[str, Any],
    headers: dict[str, str],
    extra: list[tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    headers = {"mcp-method": "tools/call", **headers}
    direct_bus, sdk_bus = bus(), bus()
    policy = {"allow": {"anonymous": ["*"]}}
    async with serving(Gateway(direct_bus, policy=policy_config(policy))) as url:
        direct = await exchange(url, body, headers, extra)
    with sdk_path_only(monkeypatch):
        async with serving(Gateway(sdk_bus, policy=policy_config(policy))) as url:
            sdk = await exchange(url, body, headers, extra)
    assert direct == sdk
    assert [(c.method, c.name, c.params) for c in direct_bus.calls] == [
        (c.method, c.name, c.params) for c in sdk_bus.calls
    ]


def policy_config(policy: dict[str, Any]) -> Any:
    from cluster.gateway.policy.chain import PolicyConfig

    return PolicyConfig.model_validate(policy)


async def test_the_official_client_is_served_by_the_direct_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served: list[str] = []
    original = Gateway.call_tool_directly

    async def counting(self: Gateway, *args: Any, **kwargs: Any) -> dict[str, Any]:
        served.append(args[2]["name"])
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(Gateway, "call_tool_directly", counting)
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with serving(Gateway(bus())) as url, mcp.Client(url) as client:
        echoed = await client.call_tool("echo", {"text": "hi"})
        counted = await client.call_tool("count", {"steps": 2}, progress_callback=on_progress)
    assert echoed.content[0].text == "hi"  # type: ignore[union-attr]
    assert counted.content[0].text == "counted 2"  # type: ignore[union-attr]
    assert seen == [1, 2]
    assert served == ["echo", "count"]


async def test_a_client_that_leaves_cancels_its_call() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def hang(params: dict[str, Any], on_message: MessageHandler | None) -> dict[str, Any]:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    fake = bus(hang=hang)
    async with serving(Gateway(fake)) as url:
        async with httpx.AsyncClient(timeout=30) as http:
            posting = asyncio.create_task(
                http.post(
                    url,
                    json=call("hang", {}),
                    headers={**HEADERS, "mcp-method": "tools/call", "mcp-name": "hang"},
                )
            )
            async with asyncio.timeout(30):
                await started.wait()
            posting.cancel()  # closes the connection mid-request
            await asyncio.gather(posting, return_exceptions=True)
        async with asyncio.timeout(30):
            await cancelled.wait()


async def test_a_silent_call_gets_keep_alive_pings_then_its_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(direct_calls, "SSE_KEEPALIVE_S", 0.05)
    release = asyncio.Event()

    async def slow(params: dict[str, Any], on_message: MessageHandler | None) -> dict[str, Any]:
        await release.wait()
        return text_result("done")

    headers = {**HEADERS, "mcp-method": "tools/call", "mcp-name": "slow"}
    async with (
        serving(Gateway(bus(slow=slow))) as url,
        httpx.AsyncClient(timeout=30) as http,
        http.stream("POST", url, json=call("slow", {}), headers=headers) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        async with asyncio.timeout(30):
            pings = 0
            while pings < 2:  # the stream stays open while the tool is silent
                pings += (await anext(lines)) == ": ping"
        release.set()
        rest = [line async for line in lines]
    answers = [json.loads(line[len("data: ") :]) for line in rest if line.startswith("data: ")]
    assert [a["result"]["content"][0]["text"] for a in answers] == ["done"]
    assert answers[0]["id"] == 7


async def test_a_forbidden_call_is_refused_and_audited_once(tmp_path: Any) -> None:
    audit = tmp_path / "audit.jsonl"
    fake = bus()
    policy = policy_config({"allow": {"anonymous": ["echo"]}, "audit_path": str(audit)})
    gateway = Gateway(fake, policy=policy)
    async with serving(gateway) as url:
        _, _, answer = await exchange(
            url, call("count", {}), {"mcp-method": "tools/call", "mcp-name": "count"}
        )
    await gateway.aclose()
    assert answer[0]["error"]["code"] == BusErrorCode.FORBIDDEN
    assert fake.calls == []
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["method"], r["tool"], r["outcome"]) for r in records] == [
        ("tools/call", "count", f"error {BusErrorCode.FORBIDDEN}")
    ]
