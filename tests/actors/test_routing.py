"""Routing from the envelope alone: the one function every backend routes by."""

from __future__ import annotations

from actors.discovery.catalog import CapabilityIndex, Catalog
from actors.discovery.registry import Membership
from actors.router.regions import RegionPolicy
from actors.router.routing import pool_for
from transports.envelope import Envelope
from transports.errors import INVALID_PARAMS, METHOD_NOT_FOUND
from transports.frame import Frame
from transports.labels import with_labels
from transports.message import Request, Response

CATALOGS = {
    "kit": Catalog.of(tools=[{"name": "echo"}], prompts=[{"name": "greet"}]),
    "docs": Catalog.of(
        resources=[{"uri": "docs://readme", "name": "readme"}],
        resource_templates=[{"uriTemplate": "docs://page/{id}", "name": "page"}],
    ),
}
MEMBERSHIP = Membership(
    version=1, workers={}, catalogs=CATALOGS, index=CapabilityIndex.build(list(CATALOGS.items()))
)


def request(method: str, name: str | None) -> Frame:
    envelope = Envelope(client_id="c", request_id="7", method=method, name=name)
    return Frame.of(envelope, Request(id=7, method=method, params={}))


def error_of(target: str | Frame) -> tuple[int, object]:
    assert isinstance(target, Frame), target
    response = target.decode()
    assert isinstance(response, Response)
    assert response.error is not None
    return response.error.code, response.error.data


def test_each_kind_of_name_routes_to_the_pool_that_lists_it() -> None:
    assert pool_for(MEMBERSHIP, request("tools/call", "echo")) == "kit"
    assert pool_for(MEMBERSHIP, request("prompts/get", "greet")) == "kit"
    assert pool_for(MEMBERSHIP, request("resources/read", "docs://readme")) == "docs"
    assert pool_for(MEMBERSHIP, request("resources/read", "docs://page/3")) == "docs"
    assert pool_for(MEMBERSHIP, request("completion/complete", "greet")) == "kit"
    assert pool_for(MEMBERSHIP, request("completion/complete", "docs://page/{id}")) == "docs"


def test_an_unknown_resource_is_invalid_params_naming_the_uri() -> None:
    code, data = error_of(pool_for(MEMBERSHIP, request("resources/read", "docs://nope")))
    assert (code, data) == (INVALID_PARAMS, {"uri": "docs://nope"})


def test_an_unknown_tool_is_invalid_params_even_before_any_membership() -> None:
    assert error_of(pool_for(MEMBERSHIP, request("tools/call", "nope"))) == (INVALID_PARAMS, None)
    assert error_of(pool_for(None, request("tools/call", "echo"))) == (INVALID_PARAMS, None)


def test_a_method_pools_do_not_serve_is_method_not_found() -> None:
    assert error_of(pool_for(MEMBERSHIP, request("tools/list", None)))[0] == METHOD_NOT_FOUND
    assert error_of(pool_for(MEMBERSHIP, request("sampling/createMessage", "x")))[0] == (
        METHOD_NOT_FOUND
    )


def test_with_regions_a_labelled_call_goes_to_its_regions_pool_or_is_refused() -> None:
    calc = Catalog.of(tools=[{"name": "add"}])
    catalogs = {"calc-eu": calc, "calc-us": calc}
    pool_regions = {"calc-eu": "eu", "calc-us": "us"}
    index = CapabilityIndex.build(list(catalogs.items()), regions=pool_regions)
    membership = Membership(version=1, workers={}, catalogs=catalogs, index=index)
    regions = RegionPolicy(pool_regions=pool_regions)

    def call(region: str | None) -> Frame:
        frame = request("tools/call", "add")
        if region is None:
            return frame
        return Frame(with_labels(frame.envelope, {"region": region}), frame.body)

    assert pool_for(membership, call("us"), regions) == "calc-us"
    assert pool_for(membership, call("eu"), regions) == "calc-eu"
    assert pool_for(membership, call(None), regions) == "calc-eu"  # today's owner
    code, data = error_of(pool_for(membership, call("ap"), regions))
    assert (code, data) == (1010, {"region": "ap", "tool": "add", "reason": "not_offered"})
    eu_down = {"calc-us"}.__contains__
    code, data = error_of(pool_for(membership, call("eu"), regions, eu_down))
    assert (code, data) == (1010, {"region": "eu", "tool": "add", "reason": "unavailable"})
    failover = regions.model_copy(update={"failover": {"eu": ["us"]}})
    assert pool_for(membership, call("eu"), failover, eu_down) == "calc-us"
    # Without router.regions labels do not route: today's owner.
    assert pool_for(membership, call("us")) == "calc-eu"
