"""Property tests: valid messages round-trip; no input raises an undocumented error."""

import contextlib
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from transports.codec import DecodeLimits, decode_message, encode_message
from transports.errors import InvalidMessage, MessageTooLarge
from transports.message import ErrorObject, Notification, Request, Response, TransportMessage

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
ids = st.text(max_size=16) | st.integers(min_value=-(2**53), max_value=2**53)
params = (
    st.none()
    | st.dictionaries(st.text(max_size=8), json_values, max_size=4)
    | st.lists(json_values, max_size=4)
)
methods = st.text(min_size=1, max_size=30)


@st.composite
def messages(draw: st.DrawFn) -> TransportMessage:
    kind = draw(st.sampled_from(["request", "notification", "result", "error"]))
    p = draw(params)
    if kind == "request":
        return Request(id=draw(ids), method=draw(methods), params=p)
    if kind == "notification":
        return Notification(method=draw(methods), params=p)
    if kind == "result":
        return Response(id=draw(ids), result=draw(json_values))
    error = ErrorObject(code=draw(st.integers(-(2**31), 2**31)), message=draw(st.text()))
    return Response(id=draw(st.none() | ids), error=error)


@given(messages())
def test_every_valid_message_round_trips(message: TransportMessage) -> None:
    assert decode_message(encode_message(message)) == message


@given(messages())
def test_encoding_is_stable(message: TransportMessage) -> None:
    once = encode_message(message)
    assert encode_message(decode_message(once)) == once


LIMITS = DecodeLimits(max_message_bytes=4096, max_depth=8)


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_documented_errors(data: bytes) -> None:
    with contextlib.suppress(InvalidMessage, MessageTooLarge):
        decode_message(data, LIMITS)


@settings(max_examples=300)
@given(json_values)
def test_arbitrary_json_raises_only_documented_errors(value: Any) -> None:
    with contextlib.suppress(InvalidMessage, MessageTooLarge):
        decode_message(json.dumps(value), LIMITS)


@settings(max_examples=200)
@given(st.text(alphabet='[]{}",:\\0a ', max_size=300))
def test_bracket_soup_raises_only_documented_errors(text: str) -> None:
    with contextlib.suppress(InvalidMessage, MessageTooLarge):
        decode_message(text, LIMITS)
