"""The trigger argument template: typed references, embedded text, escapes, failures."""

from __future__ import annotations

import json
import string
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.triggers.record import TriggerRecord
from actors.triggers.template import MissingField, Template, TemplateError

RECORD = TriggerRecord(
    raw_key=b"order-7",
    raw_value=json.dumps(
        {"id": 7, "items": [{"sku": "a-1", "qty": 2}], "paid": True, "note": None}
    ).encode(),
    raw_headers=(("shop", b"berlin"), ("trace", b"x")),
    topic="orders",
    partition=2,
    offset=41,
    timestamp_ms=1_700_000_000_000,
)


def render(arguments: dict[str, Any], record: TriggerRecord = RECORD) -> dict[str, Any]:
    return Template.parse(arguments).render(record.view())


def test_a_whole_reference_keeps_the_json_type() -> None:
    rendered = render(
        {
            "id": "${value.id}",
            "paid": "${value.paid}",
            "note": "${value.note}",
            "items": "${value.items}",
            "offset": "${offset}",
        }
    )
    assert rendered == {
        "id": 7,
        "paid": True,
        "note": None,
        "items": [{"sku": "a-1", "qty": 2}],
        "offset": 41,
    }


def test_references_inside_text_render_as_text() -> None:
    rendered = render({"note": "order ${value.id} from ${headers.shop}: ${value.items[0]}"})
    assert rendered == {"note": 'order 7 from berlin: {"sku": "a-1", "qty": 2}'}


def test_list_indexes_nested_arguments_and_literals() -> None:
    rendered = render(
        {
            "sku": "${value.items[0].sku}",
            "nested": {"list": ["${key}", 3, "plain"], "flag": False},
            "where": "${topic}/${partition}",
        }
    )
    assert rendered == {
        "sku": "a-1",
        "nested": {"list": ["order-7", 3, "plain"], "flag": False},
        "where": "orders/2",
    }


def test_double_dollar_escapes_a_reference_and_a_lone_dollar_is_text() -> None:
    rendered = render({"a": "$${value.id} costs $5", "b": "$", "c": "$$${value.id}"})
    # Left to right: "$" then "$${" (an escaped "${").
    assert rendered == {"a": "${value.id} costs $5", "b": "$", "c": "$${value.id}"}


def test_a_missing_path_fails_the_record_naming_the_path() -> None:
    template = Template.parse({"x": "${value.items[3].sku}"})
    with pytest.raises(MissingField, match=r"the record has no value\.items\[3\]\.sku"):
        template.render(RECORD.view())
    with pytest.raises(MissingField, match=r"value\.id\.deeper"):
        render({"x": "${value.id.deeper}"})


def test_a_value_that_is_not_json_is_its_text_and_bytes_that_are_not_text_are_absent() -> None:
    text = TriggerRecord(raw_key=None, raw_value=b"not json {")
    assert render({"v": "${value}"}, text) == {"v": "not json {"}
    binary = TriggerRecord(raw_key=None, raw_value=b"\xff\xfe")
    with pytest.raises(MissingField, match="value"):
        render({"v": "${value}"}, binary)
    assert render({"r": "${raw}"}, binary) == {"r": "//4="}
    with pytest.raises(MissingField, match="key"):
        render({"k": "${key}"}, binary)


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("${value.}", "is not a path"),
        ("${}", "is not a path"),
        ("${value..id}", "is not a path"),
        ("${value[x]}", "is not a path"),
        ("${value[1}", "is not a path"),
        ("${value id}", "is not a path"),
        ("${body.id}", "must start with one of"),
        ("${value.id", "is not closed"),
    ],
)
def test_bad_templates_fail_at_parse_naming_the_argument(template: str, reason: str) -> None:
    with pytest.raises(TemplateError, match=reason) as caught:
        Template.parse({"order": {"lines": ["ok", template]}})
    assert caught.value.where == "order.lines[1]"


_NAMES = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=8)
_LEAVES = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
_JSON = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_NAMES, inner, max_size=4),
    max_leaves=20,
)


def _paths(value: Any, prefix: str) -> list[tuple[str, Any]]:
    found = [(prefix, value)]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, f"{prefix}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, f"{prefix}[{i}]")
    return found


@given(_JSON)
def test_rendering_a_reference_to_any_path_gives_the_value_there(value: Any) -> None:
    record = TriggerRecord(raw_key=None, raw_value=json.dumps(value).encode())
    for path, expected in _paths(value, "value"):
        assert Template.parse({"x": "${" + path + "}"}).render(record.view()) == {"x": expected}


def test_parsing_and_rendering_a_megabyte_of_worst_case_text_stay_linear() -> None:
    # Many "$" that are not references and many references: each character is looked at
    # a bounded number of times (a backtracking parser would take minutes here).
    hostile = "$x" * 250_000 + "${value.id}" * 40_000
    started = time.process_time()
    rendered = Template.parse({"x": hostile}).render(RECORD.view())
    assert rendered["x"] == "$x" * 250_000 + "7" * 40_000
    long_path = "${value" + ".a" * 300_000 + "}"
    with pytest.raises(MissingField):
        Template.parse({"x": long_path}).render(RECORD.view())
    # Not a speed assertion: a generous bound that only a quadratic scan would break.
    assert time.process_time() - started < 60
