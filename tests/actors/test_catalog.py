"""Resource templates route URIs to pools, in time linear in the (untrusted) URI."""

from __future__ import annotations

import re
import time

from hypothesis import given
from hypothesis import strategies as st

from actors.catalog import CapabilityIndex, Catalog, Kind, UriTemplate


def _as_regex(template: str) -> re.Pattern[str]:
    # The regex translation the router used before: the reference semantics.
    out = []
    for literal, expression in re.findall(r"([^{}]*)(\{[^{}]*\})?", template):
        out.append(re.escape(literal))
        if expression:
            out.append(".+" if expression[1] in "+#/" else "[^/]+")
    return re.compile("".join(out) + r"\Z")


def test_a_segment_variable_matches_one_segment_and_a_plus_variable_anything() -> None:
    item = UriTemplate("kit://items/{id}")
    assert item.matches("kit://items/42")
    assert not item.matches("kit://items/")
    assert not item.matches("kit://items/4/2")
    assert not item.matches("kit://other/42")
    path = UriTemplate("file:///{+path}/raw")
    assert path.matches("file:///a/b/c/raw")
    assert not path.matches("file:///a/b/c/raw/x")
    assert UriTemplate("kit://fixed").matches("kit://fixed")
    assert not UriTemplate("kit://fixed").matches("kit://fixed2")


_PIECES = st.lists(st.sampled_from(["a", "/", ":", "{x}", "{+x}", "{/x}", "b/"]), max_size=6)


@given(_PIECES, st.text(alphabet="ab/:\n", max_size=12))
def test_templates_match_exactly_what_their_regex_translation_matches(
    pieces: list[str], uri: str
) -> None:
    template = "".join(pieces)
    assert UriTemplate(template).matches(uri) == bool(_as_regex(template).match(uri))


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
