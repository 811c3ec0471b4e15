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
