"""Pool namespaces and tool filters: names shown to the bus, names the server receives."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.discovery.catalog import CapabilityIndex, Catalog, Collision, Kind
from actors.discovery.exposure import SHOW_ALL, PoolExposure, Refusal
from actors.discovery.registry import DiscoveryRegistry, Heartbeat, ServerStatus
from actors.worker.hosted_server import HostedServer
from actors.worker.sdk_link import SdkServerLink, load_server_object
from tests.actors.fakes import FakeClock
from transports.envelope import Envelope
from transports.frame import Frame
from transports.message import Request, Response

GEO = PoolExposure(namespace="geo")

SERVER_CATALOG = Catalog.of(
    tools=[{"name": "hypotenuse"}, {"name": "area"}, {"name": "admin_reset"}],
    resources=[{"uri": "geo://earth", "name": "earth"}],
    resource_templates=[{"uriTemplate": "geo://city/{name}", "name": "city"}],
    prompts=[{"name": "explain"}],
)


def names(items: tuple[dict[str, Any], ...], key: str = "name") -> list[str]:
    return [str(item[key]) for item in items]


def request(method: str, params: dict[str, Any]) -> Request:
    return Request(id=7, method=method, params=params)


# -- names ---------------------------------------------------------------------------


def test_a_namespace_prefixes_names_with_the_separator() -> None:
    assert GEO.public_name("hypotenuse") == "geo_hypotenuse"
    assert PoolExposure(namespace="geo", separator="..").public_name("x") == "geo..x"


def test_only_names_under_the_pools_prefix_map_back() -> None:
    assert GEO.own_name("geo_hypotenuse") == "hypotenuse"
    assert GEO.own_name("geo_") is None  # the prefix alone names nothing
    assert GEO.own_name("geox_hypotenuse") is None
    assert GEO.own_name("hypotenuse") is None
    assert SHOW_ALL.own_name("hypotenuse") == "hypotenuse"


@given(
    namespace=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,10}", fullmatch=True),
    separator=st.from_regex(r"[_.-]{1,4}", fullmatch=True),
    name=st.text(min_size=1, max_size=30),
)
def test_every_public_name_maps_back_to_the_servers_own_name(
    namespace: str, separator: str, name: str
) -> None:
    exposure = PoolExposure(namespace=namespace, separator=separator)
    assert exposure.own_name(exposure.public_name(name)) == name


# -- filters -------------------------------------------------------------------------


def test_exclude_patterns_hide_matching_tools_and_win_over_include() -> None:
    exposure = PoolExposure(include=("*a*",), exclude=("admin_*",))
    shown = [name for name in ("hypotenuse", "area", "admin_reset") if exposure.shows_tool(name)]
    assert shown == ["area"]


def test_include_lists_exact_names_and_globs_case_sensitively() -> None:
    exposure = PoolExposure(include=("hypotenuse", "ar?a"))
    assert exposure.shows_tool("hypotenuse")
    assert exposure.shows_tool("area")
    assert not exposure.shows_tool("Area")
    assert not exposure.shows_tool("admin_reset")


# -- catalogs ------------------------------------------------------------------------


def test_the_listed_catalog_shows_public_names_and_keeps_uris() -> None:
    exposure = PoolExposure(namespace="geo", exclude=("admin_*",))
    listed = exposure.expose(SERVER_CATALOG)
    assert names(listed.tools) == ["geo_hypotenuse", "geo_area"]
    assert names(listed.prompts) == ["geo_explain"]
    assert names(listed.resources) == ["geo_earth"]
    assert names(listed.resources, "uri") == ["geo://earth"]
    assert names(listed.resource_templates) == ["geo_city"]
    assert names(listed.resource_templates, "uriTemplate") == ["geo://city/{name}"]
    assert listed.digest != SERVER_CATALOG.digest  # workers resend a changed catalog


def test_filters_without_a_namespace_keep_the_servers_names() -> None:
    listed = PoolExposure(exclude=("admin_reset",)).expose(SERVER_CATALOG)
    assert names(listed.tools) == ["hypotenuse", "area"]
    assert listed.prompts == SERVER_CATALOG.prompts


def test_a_pool_without_namespace_or_filters_lists_its_server_unchanged() -> None:
    assert SHOW_ALL.expose(SERVER_CATALOG) is SERVER_CATALOG


# -- requests ------------------------------------------------------------------------


def test_a_tool_call_reaches_the_server_under_its_own_name() -> None:
    call = request("tools/call", {"name": "geo_hypotenuse", "arguments": {"a": 3, "b": 4}})
    mapped = GEO.to_server(call)
    assert isinstance(mapped, Request)
    assert mapped.params == {"name": "hypotenuse", "arguments": {"a": 3, "b": 4}}
    assert mapped.id == call.id


def test_a_call_to_an_excluded_tool_is_refused_as_unknown() -> None:
    exposure = PoolExposure(namespace="geo", exclude=("admin_*",))
    refused = exposure.to_server(request("tools/call", {"name": "geo_admin_reset"}))
    assert refused == Refusal("Unknown tool: geo_admin_reset")
    hidden = PoolExposure(include=("area",)).to_server(request("tools/call", {"name": "x"}))
    assert hidden == Refusal("Unknown tool: x")


def test_a_call_by_the_servers_own_name_is_refused_in_a_namespaced_pool() -> None:
    refused = GEO.to_server(request("tools/call", {"name": "hypotenuse"}))
    assert refused == Refusal("Unknown tool: hypotenuse")
    refused_prompt = GEO.to_server(request("prompts/get", {"name": "explain"}))
    assert refused_prompt == Refusal("Unknown prompt: explain")


def test_prompts_and_prompt_completions_reach_the_server_under_its_own_name() -> None:
    got = GEO.to_server(request("prompts/get", {"name": "geo_explain", "arguments": {}}))
    assert isinstance(got, Request)
    assert got.params == {"name": "explain", "arguments": {}}
    ref = {"type": "ref/prompt", "name": "geo_explain"}
    completion = {"ref": ref, "argument": {"name": "topic", "value": "r"}}
    completed = GEO.to_server(request("completion/complete", completion))
    assert isinstance(completed, Request)
    assert completed.params == {**completion, "ref": {"type": "ref/prompt", "name": "explain"}}


def test_resource_requests_pass_unchanged() -> None:
    requests: list[tuple[str, dict[str, Any]]] = [
        ("resources/read", {"uri": "geo://earth"}),
        ("resources/subscribe", {"uri": "geo://earth"}),
        ("completion/complete", {"ref": {"type": "ref/resource", "uri": "geo://city/{name}"}}),
    ]
    for method, params in requests:
        unchanged = request(method, params)
        assert GEO.to_server(unchanged) is unchanged


# -- collisions ----------------------------------------------------------------------


def test_the_first_pool_keeps_a_name_two_pools_offer_and_the_clash_is_recorded() -> None:
    first = Catalog.of(tools=[{"name": "hypotenuse"}, {"name": "area"}])
    second = Catalog.of(tools=[{"name": "hypotenuse"}], prompts=[{"name": "p"}])
    index = CapabilityIndex.build([("a", first), ("b", second)])
    assert index.pool_for(Kind.TOOL, "hypotenuse") == "a"
    assert index.collisions == [Collision(Kind.TOOL, "hypotenuse", "a", "b")]
    assert str(index.collisions[0]) == (
        "tool 'hypotenuse' is offered by pools 'a' and 'b'; 'a' keeps it"
    )


def test_the_same_server_under_two_namespaces_shares_only_its_uris() -> None:
    catalogs = [
        (pool, PoolExposure(namespace=pool).expose(SERVER_CATALOG)) for pool in ("geo", "maps")
    ]
    index = CapabilityIndex.build(catalogs)
    # URIs are the server's addresses, never rewritten: the first pool serves them.
    assert index.collisions == [Collision(Kind.RESOURCE, "geo://earth", "geo", "maps")]
    assert index.pool_for(Kind.TOOL, "geo_area") == "geo"
    assert index.pool_for(Kind.TOOL, "maps_area") == "maps"
    assert index.pool_for(Kind.PROMPT, "maps_explain") == "maps"


def _beat(pool: str, catalog: Catalog) -> Heartbeat:
    return Heartbeat(
        server_id=f"{pool}-1",
        pool=pool,
        actor_name=f"w/{pool}",
        status=ServerStatus.ONLINE,
        in_flight=0,
        catalog_digest=catalog.digest,
        catalog=catalog,
    )


def test_a_clash_that_appears_at_run_time_keeps_the_first_owner_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = DiscoveryRegistry(ttl_s=5, clock=FakeClock())
    # b registers first, but a offers "area" first
    registry.heartbeat(_beat("b", Catalog.of(tools=[{"name": "volume"}])))
    registry.heartbeat(_beat("a", Catalog.of(tools=[{"name": "area"}])))
    assert registry.snapshot().collisions == []
    with caplog.at_level(logging.WARNING, logger="actors.discovery.registry"):
        # b's server added a tool a already has
        registry.heartbeat(_beat("b", Catalog.of(tools=[{"name": "volume"}, {"name": "area"}])))
        snapshot = registry.snapshot()
        registry.heartbeat(_beat("a", Catalog.of(tools=[{"name": "area"}, {"name": "x"}])))
        registry.snapshot()
    assert snapshot.pool_for(Kind.TOOL, "area") == "a"
    assert snapshot.collisions == [Collision(Kind.TOOL, "area", "a", "b")]
    warnings = [r.getMessage() for r in caplog.records if "offered by pools" in r.getMessage()]
    assert len(warnings) == 1
    assert "'area'" in warnings[0]
    # Lists show the name at its owner only, so what is listed is what is called.
    assert {pool: names(c.tools) for pool, c in snapshot.listed.items()} == {
        "b": ["volume"],
        "a": ["area"],
    }


# -- a real SDK server behind a namespaced pool ---------------------------------------


@pytest.fixture
async def namespaced_testkit() -> AsyncIterator[HostedServer]:
    server = load_server_object("cluster.examples.testkit:server")
    hosted = HostedServer(
        lambda: SdkServerLink(server),
        sink=lambda destination, frame: None,
        address="worker-1",
        exposure=PoolExposure(namespace="kit", exclude=("die", "fail")),
    )
    async with asyncio.timeout(30):
        await hosted.start()
    yield hosted
    await hosted.close()


async def forward(hosted: HostedServer, method: str, params: dict[str, Any]) -> Response:
    envelope = Envelope(client_id="c", request_id="1", reply_to="endpoint-c", method=method)
    async with asyncio.timeout(30):
        response = await hosted.call(Frame.of(envelope, request(method, params)), 30)
    assert response is not None
    return response


async def test_a_namespaced_server_lists_public_names_and_answers_calls_by_them(
    namespaced_testkit: HostedServer,
) -> None:
    tools = names(namespaced_testkit.catalog.tools)
    assert "kit_echo" in tools
    assert not {"kit_die", "kit_fail", "echo"} & set(tools)
    assert names(namespaced_testkit.catalog.prompts) == ["kit_summarize"]
    echoed = await forward(
        namespaced_testkit, "tools/call", {"name": "kit_echo", "arguments": {"text": "hi"}}
    )
    assert isinstance(echoed.result, dict)
    assert echoed.result["structuredContent"] == {"result": "hi"}
    prompt = await forward(
        namespaced_testkit, "prompts/get", {"name": "kit_summarize", "arguments": {"topic": "Ray"}}
    )
    assert isinstance(prompt.result, dict)
    assert "Ray" in prompt.result["messages"][0]["content"]["text"]


async def test_a_namespaced_server_refuses_hidden_tools_and_its_own_names(
    namespaced_testkit: HostedServer,
) -> None:
    for name in ("kit_die", "echo"):
        refused = await forward(namespaced_testkit, "tools/call", {"name": name, "arguments": {}})
        assert refused.error is not None
        assert (refused.error.code, refused.error.message) == (-32602, f"Unknown tool: {name}")
    assert namespaced_testkit.in_flight == 0
