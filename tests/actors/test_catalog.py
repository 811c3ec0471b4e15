"""Resource templates route URIs to pools, in time linear in the (untrusted) URI."""

from __future__ import annotations

import time

from actors.discovery.catalog import CapabilityIndex, Catalog, Kind


def test_a_long_uri_against_a_template_with_several_variables_is_matched_in_linear_time() -> None:
    # The regex form backtracks: this took 0.07 s for 4 KB, so minutes for 256 KB.
    index = CapabilityIndex.build(
        [("files", Catalog.of(resource_templates=[{"uriTemplate": "f:///{+a}/{+b}/{c}"}]))]
    )
    uri = "f:///" + "/" * (256 * 1024)  # no last segment: no match
    started = time.perf_counter()
    assert index.pool_for(Kind.RESOURCE, uri) is None
    assert index.pool_for(Kind.RESOURCE, "f:///x/y/z") == "files"
    # Generous for a loaded 2-core machine: the quadratic form needs minutes here.
    assert time.perf_counter() - started < 2.0


def _calc() -> Catalog:
    return Catalog.of(tools=[{"name": "add"}, {"name": "mul"}])


def test_pools_of_different_regions_offering_one_name_are_replicas_not_a_collision() -> None:
    regions = {"calc-eu": "eu", "calc-us": "us"}
    index = CapabilityIndex.build([("calc-eu", _calc()), ("calc-us", _calc())], regions=regions)
    assert index.collisions == []
    assert index.candidates(Kind.TOOL, "add") == ("calc-eu", "calc-us")
    assert index.pool_for(Kind.TOOL, "add") == "calc-eu"  # unregioned callers: today's owner
    # Lists show the name once, at its owner.
    assert index.shown("calc-eu", _calc()).names(Kind.TOOL) == {"add", "mul"}
    assert index.shown("calc-us", _calc()).names(Kind.TOOL) == set()


def test_pools_of_one_region_or_of_none_offering_one_name_still_collide() -> None:
    regions = {"eu-1": "eu", "eu-2": "eu", "us-1": "us"}
    catalogs = [("eu-1", _calc()), ("eu-2", _calc()), ("us-1", _calc())]
    index = CapabilityIndex.build(catalogs, regions=regions)
    assert {(c.owner, c.other) for c in index.collisions} == {("eu-1", "eu-2")}
    assert index.candidates(Kind.TOOL, "add") == ("eu-1", "us-1")
    without_regions = CapabilityIndex.build(catalogs)
    assert {(c.owner, c.other) for c in without_regions.collisions} == {
        ("eu-1", "eu-2"),
        ("eu-1", "us-1"),
    }
    assert without_regions.candidates(Kind.TOOL, "add") == ("eu-1",)


def test_an_owner_kept_from_the_previous_index_stays_first_among_replicas() -> None:
    regions = {"calc-eu": "eu", "calc-us": "us"}
    first = CapabilityIndex.build([("calc-us", _calc())], regions=regions)
    later = CapabilityIndex.build(
        [("calc-eu", _calc()), ("calc-us", _calc())], previous=first, regions=regions
    )
    assert later.candidates(Kind.TOOL, "add") == ("calc-us", "calc-eu")
