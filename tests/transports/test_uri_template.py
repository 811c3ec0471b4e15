"""URI templates match exactly what their regex form did, in time linear in the URI."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from transports.uri_template import UriTemplate


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
