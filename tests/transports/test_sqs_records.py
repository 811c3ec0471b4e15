"""How a trigger's record becomes an SQS message: text body, at most ten attributes."""

from __future__ import annotations

import base64
import json

from transports.sqs.records import TRIGGER_ATTRIBUTE, _message


def test_text_values_and_a_few_headers_travel_as_they_are_beside_one_raybus_attribute() -> None:
    headers = [("shop", b"berlin"), ("raybus-trigger-key", b"sqs/q/1"), ("raybus-attempts", b"1")]
    body, attributes = _message(None, b'{"id": 7}', headers)
    assert body == '{"id": 7}'
    assert attributes["shop"] == {"DataType": "String", "StringValue": "berlin"}
    ours = json.loads(attributes[TRIGGER_ATTRIBUTE]["StringValue"])
    assert ours == {"raybus-trigger-key": "sqs/q/1", "raybus-attempts": "1"}
    assert len(attributes) == 2


def test_more_headers_than_sqs_allows_are_kept_inside_the_raybus_attribute() -> None:
    headers = [(f"h{i}", b"v") for i in range(12)] + [("raybus-source", b"t/0/1")]
    _, attributes = _message(b"k", b"x", headers)
    assert list(attributes) == [TRIGGER_ATTRIBUTE]  # within SQS's ten
    ours = json.loads(attributes[TRIGGER_ATTRIBUTE]["StringValue"])
    assert ours["headers"] == {f"h{i}": "v" for i in range(12)}
    assert (ours["raybus-key"], ours["raybus-source"]) == ("k", "t/0/1")


def test_bytes_that_are_not_text_go_as_base64_and_an_empty_value_is_marked() -> None:
    for value in (b"\xff\x00binary", b"text with a \x00 NUL", "\ufffe".encode()):
        body, attributes = _message(None, value, [])
        assert base64.b64decode(body) == value
        ours = json.loads(attributes[TRIGGER_ATTRIBUTE]["StringValue"])
        assert ours == {"raybus-encoding": "base64"}
    assert _message(None, "tab\tand\nlines é".encode(), [])[0] == "tab\tand\nlines é"
    body, attributes = _message(None, b"", [])
    assert body == "-"
    assert json.loads(attributes[TRIGGER_ATTRIBUTE]["StringValue"]) == {"raybus-encoding": "empty"}
