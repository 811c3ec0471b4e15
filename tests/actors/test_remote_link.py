"""A worker hosting a remote server over Streamable HTTP, without Ray.

The upstream is the official SDK serving :mod:`tests.cluster.remote_upstream` in a
process of its own on 127.0.0.1; the worker reaches it with the SDK's client transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from actors.worker.core import WorkerCore, WorkerIdentity
from actors.worker.hosted_server import HostedServer
from actors.worker.remote_link import RemoteServerLink
from tests.actors.fakes import RecordingWorkerPorts
from tests.actors.test_worker import tool_call
from tests.upstream_process import Upstream, free_port, running_upstream
from tests.waiting import wait_until
from transports.errors import BusError, BusErrorCode
from transports.message import Response

WORKER = "worker-1"
SECRET = "Bearer upstream-secret"


def remote(url: str, *, connect_timeout_s: float = 10.0) -> Any:
    return lambda: RemoteServerLink(
        url,
        {"Authorization": SECRET},
        label=url,
        max_connections=8,
        connect_timeout_s=connect_timeout_s,
    )


async def hosting(
    url: str, ports: RecordingWorkerPorts, *, call_timeout_s: float = 60.0, **link: Any
) -> tuple[WorkerCore, list[str]]:
    changed: list[str] = []
    hosted = HostedServer(
        remote(url, **link),
        sink=ports.reply,
        address=WORKER,
        on_list_changed=changed.append,
        restart_backoff_s=(0.05, 0.5),
    )
    identity = WorkerIdentity("s1", "pool", WORKER, capacity=8)
    worker = WorkerCore(identity, hosted, ports, call_timeout_s=call_timeout_s)
    async with asyncio.timeout(60):
        await worker.start()
    return worker, changed


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with running_upstream() as running:
        yield running


async def answer(ports: RecordingWorkerPorts, count: int) -> Response:
    replies = await ports.wait_for(Response, count=count, timeout_s=60)
    response = replies[-1].decode()
    assert isinstance(response, Response)
    return response


async def test_calls_reach_the_remote_server_with_the_configured_headers(
    upstream: Upstream,
) -> None:
    ports = RecordingWorkerPorts()
    worker, _ = await hosting(upstream.url, ports)
    try:
        assert {"echo", "nap", "grow"} <= {t["name"] for t in worker.hosted.catalog.tools}
        worker.deliver([tool_call("a", 1, "echo", text="over http")])
        assert (await answer(ports, 1)).result["structuredContent"] == {"result": "over http"}
        worker.deliver([tool_call("a", 2, "headers_seen")])
        seen = (await answer(ports, 2)).result["structuredContent"]["result"]
        # initialize, initialized, the lists, the GET stream, the calls: every one.
        assert len(seen) >= 4
        assert all(headers == {"authorization": SECRET} for headers in seen)
    finally:
        await worker.drain(0, timeout_s=10)


async def test_a_list_change_upstream_is_relayed_and_the_catalog_re_read(
    upstream: Upstream,
) -> None:
    ports = RecordingWorkerPorts()
    worker, changed = await hosting(upstream.url, ports)
    try:
        # The upstream announces on the session's GET stream, which opens in the
        # background after the handshake: announce until one is heard (bounded).
        async with asyncio.timeout(60):
            while "tool" not in changed:
                sent = len(ports.sent) + 1
                worker.deliver([tool_call("a", sent, "grow", name="shout")])
                assert (await answer(ports, sent)).error is None
        await wait_until(
            lambda: "shout" in {t["name"] for t in worker.hosted.catalog.tools}, timeout_s=60
        )
    finally:
        await worker.drain(0, timeout_s=10)


async def test_an_http_error_status_fails_the_call_as_an_upstream_fault(
    upstream: Upstream,
) -> None:
    ports = RecordingWorkerPorts()
    worker, _ = await hosting(upstream.url, ports)
    try:
        worker.deliver([tool_call("a", 1, "http_503")])
        failed = await answer(ports, 1)
        assert failed.error is not None
        assert failed.error.code == BusErrorCode.UPSTREAM_FAILED
        assert f"{upstream.url} answered HTTP 503" in failed.error.message
        assert ports.completions[-1].failed  # counted against the pool by its breaker
        worker.deliver([tool_call("a", 2, "echo", text="still here")])
        assert (await answer(ports, 2)).error is None  # one bad answer, same session
    finally:
        await worker.drain(0, timeout_s=10)


async def test_an_unreachable_upstream_fails_the_start_naming_its_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    with pytest.raises(BusError) as caught:
        await hosting(url, RecordingWorkerPorts())
    assert url in str(caught.value)
    assert "cannot connect" in str(caught.value)


async def test_a_wrong_path_fails_the_start_with_the_http_status(upstream: Upstream) -> None:
    url = upstream.url.replace("/mcp", "/nope")
    with pytest.raises(BusError) as caught:
        await hosting(url, RecordingWorkerPorts())
    assert f"{url} answered HTTP 404" in str(caught.value)


async def test_an_upstream_killed_mid_call_fails_the_call_and_is_reconnected_when_back(
    upstream: Upstream,
) -> None:
    ports = RecordingWorkerPorts()
    worker, _ = await hosting(upstream.url, ports)
    try:
        worker.deliver([tool_call("a", 1, "nap", seconds=600)])
        await wait_until(lambda: worker.in_flight == 1)
        await upstream.kill()
        failed = await answer(ports, 1)
        assert failed.error is not None
        assert failed.error.code == BusErrorCode.UPSTREAM_FAILED
        assert upstream.url in failed.error.message
        # Back on the same port: a new process, which knows none of the old sessions.
        await upstream.start()
        async with asyncio.timeout(60):
            while True:
                await worker.hosted.connected.wait()
                sent = len([f for _, f in ports.sent])
                worker.deliver([tool_call("a", 100 + sent, "echo", text="back")])
                back = await answer(ports, sent + 1)
                if back.error is None:
                    break
                assert back.error.code == BusErrorCode.UPSTREAM_FAILED, back.error
        assert back.result["structuredContent"] == {"result": "back"}
        assert worker.hosted.restarts >= 1
    finally:
        await worker.drain(0, timeout_s=10)


async def test_an_expired_session_is_replaced_by_a_new_one(upstream: Upstream) -> None:
    ports = RecordingWorkerPorts()
    worker, _ = await hosting(upstream.url, ports)
    try:
        link = worker.hosted._link
        worker.deliver([tool_call("a", 1, "forget_my_session")])
        assert (await answer(ports, 1)).error is None
        # The upstream now answers the session's id with 404, as for an expired session:
        # the call it refused (so never ran) is sent again on a new session.
        worker.deliver([tool_call("a", 2, "echo", text="refused, then resent")])
        resent = await answer(ports, 2)
        assert resent.error is None, resent.error
        assert resent.result["structuredContent"] == {"result": "refused, then resent"}
        assert worker.hosted.restarts == 1
        assert worker.hosted._link is not link
    finally:
        await worker.drain(0, timeout_s=10)


async def test_a_restarted_upstream_is_reconnected_before_any_call_needs_it(
    upstream: Upstream,
) -> None:
    ports = RecordingWorkerPorts()
    worker, _ = await hosting(upstream.url, ports)
    try:
        await upstream.kill()
        # No call is made: the lost GET stream tells.
        await wait_until(lambda: not worker.hosted.connected.is_set(), timeout_s=60)
        await upstream.start()
        await wait_until(lambda: worker.hosted.restarts >= 1, timeout_s=60)
        worker.deliver([tool_call("a", 1, "echo", text="first")])
        assert (await answer(ports, 1)).error is None  # the first call, on the new session
    finally:
        await worker.drain(0, timeout_s=10)


async def test_a_hung_upstream_ends_calls_at_their_deadline_then_fails_fast(
    upstream: Upstream,
) -> None:
    ports = RecordingWorkerPorts()
    worker, _ = await hosting(upstream.url, ports, call_timeout_s=2.0, connect_timeout_s=2.0)
    try:
        upstream.freeze()
        worker.deliver([tool_call("a", 1, "echo", text="into the void")])
        late = await answer(ports, 1)
        assert late.error is not None
        assert late.error.code == BusErrorCode.DEADLINE_EXCEEDED
        # The cancellation is not acknowledged either: the session is given up, and
        # calls fail at once instead of each waiting out its deadline.
        await wait_until(lambda: not worker.hosted.connected.is_set(), timeout_s=60)
        worker.deliver([tool_call("a", 2, "echo", text="again")])
        refused = await answer(ports, 2)
        assert refused.error is not None
        assert refused.error.code == BusErrorCode.UPSTREAM_FAILED
    finally:
        upstream.thaw()
        await worker.drain(0, timeout_s=10)
