"""``/metrics``: sources collected at once and bounded, merged, served on loopback."""

from __future__ import annotations

import asyncio

import httpx2 as httpx
import pytest

from cluster.metrics.catalog import GATEWAY_REFUSED, REQUESTS
from cluster.metrics.endpoint import (
    MetricsBindError,
    MetricsCollector,
    Source,
    metrics_app,
    metrics_listener,
    metrics_server,
)
from cluster.metrics.registry import FamilySnapshot, MetricsRegistry
from tests.actors.fakes import FakeClock
from tests.cluster.metrics.prometheus_text import parse


def registry_source(registry: MetricsRegistry) -> Source:
    async def snapshot() -> list[FamilySnapshot]:
        return registry.snapshot()

    return snapshot


async def absent() -> list[FamilySnapshot] | None:
    return None


async def failing() -> list[FamilySnapshot] | None:
    raise RuntimeError("the actor died")


async def test_sources_are_merged_and_each_answering_one_is_up() -> None:
    router, replica_a, replica_b = (MetricsRegistry("demo") for _ in range(3))
    router.counter(REQUESTS).inc(("kit", "echo", "ok"), 7)
    replica_a.counter(GATEWAY_REFUSED).inc(("host_or_origin",))
    replica_b.counter(GATEWAY_REFUSED).inc(("host_or_origin",), 2)
    sources = {
        "router": registry_source(router),
        "gateway/a": registry_source(replica_a),
        "gateway/b": registry_source(replica_b),
        "autoscaler": absent,
    }
    page = parse(await MetricsCollector("demo", lambda: sources).page())
    assert page.value("raybus_requests_total", outcome="ok") == 7
    assert page.value("raybus_gateway_refused_total", reason="host_or_origin") == 3
    up = {s["source"]: v for _, s, v in page.samples if s.get("source")}
    assert up == {"router": 1, "gateway/a": 1, "gateway/b": 1}  # an absent source is no row


async def test_a_source_that_fails_or_hangs_is_down_and_the_page_still_comes() -> None:
    registry = MetricsRegistry("demo")
    registry.counter(REQUESTS).inc(("kit", "echo", "ok"))
    never = asyncio.Event()

    async def hanging() -> list[FamilySnapshot] | None:
        await never.wait()
        return None

    sources = {"router": registry_source(registry), "dead": failing, "stuck": hanging}
    collector = MetricsCollector("demo", lambda: sources, timeout_s=0.2)
    async with asyncio.timeout(10):
        page = parse(await collector.page())
    assert page.value("raybus_metrics_source_up", source="dead") == 0
    assert page.value("raybus_metrics_source_up", source="stuck") == 0
    assert page.value("raybus_requests_total", outcome="ok") == 1


async def test_a_fresh_page_is_reused_and_concurrent_scrapes_share_one_collection() -> None:
    asked = 0
    registry = MetricsRegistry("demo")

    async def counted() -> list[FamilySnapshot]:
        nonlocal asked
        asked += 1
        await asyncio.sleep(0)  # lets the other scrapes arrive while this one collects
        return registry.snapshot()

    clock = FakeClock()
    collector = MetricsCollector("demo", lambda: {"router": counted}, max_age_s=1, clock=clock)
    pages = await asyncio.gather(*(collector.page() for _ in range(5)))
    assert asked == 1
    assert len(set(pages)) == 1
    clock.advance(0.5)
    await collector.page()
    assert asked == 1
    clock.advance(1)
    await collector.page()
    assert asked == 2


async def get(app: object, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.request(method, path)
    return response.status_code, dict(response.headers), response.content


async def test_the_app_serves_the_page_at_metrics_only() -> None:
    registry = MetricsRegistry("demo")
    registry.counter(REQUESTS).inc(("kit", "echo", "ok"))
    app = metrics_app(MetricsCollector("demo", lambda: {"router": registry_source(registry)}))
    status, headers, body = await get(app, "/metrics")
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert parse(body.decode()).value("raybus_requests_total", outcome="ok") == 1
    assert (await get(app, "/"))[0] == 404
    status, headers, _ = await get(app, "/metrics", "POST")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"


async def test_the_server_listens_on_loopback_and_a_taken_port_is_named() -> None:
    registry = MetricsRegistry("demo")
    registry.counter(REQUESTS).inc(("kit", "echo", "ok"))
    sock = metrics_listener(0)
    assert sock.getsockname()[0] == "127.0.0.1"
    port = sock.getsockname()[1]
    server = metrics_server(MetricsCollector("demo", lambda: {"r": registry_source(registry)}))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server.started:  # noqa: ASYNC110 - uvicorn's flag, no event to await
                await asyncio.sleep(0.01)
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert parse(response.text).value("raybus_requests_total", outcome="ok") == 1
        with pytest.raises(MetricsBindError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            metrics_listener(port)
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await serving
        sock.close()
