import json
import time

import pytest

from transports.codec import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DecodeLimits,
    decode_message,
    encode_message,
    error_response_for,
)
from transports.errors import (
    INVALID_REQUEST,
    PARSE_ERROR,
    InvalidMessage,
    InvalidRequest,
    MessageTooLarge,
    ParseError,
)
from transports.message import ErrorObject, Notification, Request, Response


def test_a_request_decodes_to_a_request() -> None:
    message = decode_message(b'{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{}}')
    assert message == Request(id=7, method="tools/list", params={})


def test_a_notification_has_no_id() -> None:
    message = decode_message('{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert isinstance(message, Notification)


def test_responses_decode_with_result_or_error() -> None:
    ok = decode_message(b'{"jsonrpc":"2.0","id":"a","result":{"x":1}}')
    assert ok == Response.success("a", {"x": 1})
    failed = decode_message(b'{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}')
    assert isinstance(failed, Response)
    assert failed.error == ErrorObject(code=-32601, message="no")


def test_a_null_result_is_a_result() -> None:
    message = decode_message(b'{"jsonrpc":"2.0","id":1,"result":null}')
    assert isinstance(message, Response)
    assert not message.is_error
    assert encode_message(message) == b'{"jsonrpc":"2.0","id":1,"result":null}'


def test_an_error_response_may_have_a_null_id() -> None:
    message = decode_message(
        b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}'
    )
    assert isinstance(message, Response)
    assert message.id is None


def _error_of(data: bytes | str, limits: DecodeLimits | None = None) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        decode_message(data, limits or DecodeLimits())
    return caught.value


PARSE_ERRORS = {
    "not json": b"{nope",
    "empty": b"",
    "invalid utf-8": b'{"jsonrpc":"2.0","method":"\xff"}',
    "nan": b'{"jsonrpc":"2.0","id":1,"result":NaN}',
    "infinity": b'{"jsonrpc":"2.0","id":1,"result":-Infinity}',
    "a number that overflows to infinity": b'{"jsonrpc":"2.0","id":1,"result":-1e400}',
    "duplicate keys": b'{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}',
    "nested duplicate keys": b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":1,"a":2}}',
    "trailing garbage": b'{"jsonrpc":"2.0","method":"x"} {}',
    "utf-8 bom": '\ufeff{"jsonrpc":"2.0","method":"x"}'.encode(),
}


@pytest.mark.parametrize("data", PARSE_ERRORS.values(), ids=PARSE_ERRORS.keys())
def test_unparseable_input_is_a_parse_error_with_null_id(data: bytes) -> None:
    error = _error_of(data)
    assert isinstance(error, ParseError)
    response = error_response_for(error)
    assert response.id is None
    assert response.error is not None
    assert response.error.code == PARSE_ERROR


INVALID_REQUESTS = {
    "batch": b'[{"jsonrpc":"2.0","id":1,"method":"x"}]',
    "empty batch": b"[]",
    "scalar": b"42",
    "no jsonrpc": b'{"id":1,"method":"x"}',
    "jsonrpc 1.0": b'{"jsonrpc":"1.0","id":1,"method":"x"}',
    "null id": b'{"jsonrpc":"2.0","id":null,"method":"x"}',
    "float id": b'{"jsonrpc":"2.0","id":1.5,"method":"x"}',
    "bool id": b'{"jsonrpc":"2.0","id":true,"method":"x"}',
    "object id": b'{"jsonrpc":"2.0","id":{},"method":"x"}',
    "numeric method": b'{"jsonrpc":"2.0","id":1,"method":5}',
    "scalar params": b'{"jsonrpc":"2.0","id":1,"method":"x","params":3}',
    "null params": b'{"jsonrpc":"2.0","id":1,"method":"x","params":null}',
    "result and error": b'{"jsonrpc":"2.0","id":1,"result":1,"error":{"code":1,"message":"m"}}',
    "neither": b'{"jsonrpc":"2.0","id":1}',
    "null id success": b'{"jsonrpc":"2.0","id":null,"result":1}',
    "bad error object": b'{"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}',
    "unknown member": b'{"jsonrpc":"2.0","id":1,"method":"x","extra":1}',
}


@pytest.mark.parametrize("data", INVALID_REQUESTS.values(), ids=INVALID_REQUESTS.keys())
def test_json_that_is_not_json_rpc_is_an_invalid_request(data: bytes) -> None:
    error = _error_of(data)
    assert isinstance(error, InvalidRequest)
    response = error_response_for(error)
    assert response.error is not None
    assert response.error.code == INVALID_REQUEST


def test_an_invalid_request_keeps_a_readable_id_for_the_answer() -> None:
    error = _error_of(b'{"jsonrpc":"2.0","id":"req-9","method":7}')
    assert error_response_for(error).id == "req-9"
    assert "method" in error.detail


def test_an_unreadable_id_answers_with_null() -> None:
    error = _error_of(b'{"jsonrpc":"2.0","id":true,"method":"x"}')
    assert error_response_for(error).id is None


def test_deep_nesting_is_rejected_quickly_without_recursion_error() -> None:
    deep = b'{"jsonrpc":"2.0","id":1,"method":"x","params":' + b"[" * 200_000 + b"]" * 200_000
    error = _error_of(deep + b"}")
    assert isinstance(error, ParseError)
    assert "deeper" in error.detail


def test_nesting_up_to_the_bound_is_accepted_and_one_more_is_not() -> None:
    limits = DecodeLimits(max_depth=10)

    def nested(depth: int) -> str:
        # The message object itself is depth 1, params depth 2.
        inner = "[" * (depth - 2) + "]" * (depth - 2)
        return '{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":' + inner + "}}"

    assert isinstance(decode_message(nested(10), limits), Request)
    assert isinstance(_error_of(nested(11), limits), ParseError)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "x", "params": {"s": "[" * 500}})
    assert isinstance(decode_message(text, DecodeLimits(max_depth=4)), Request)


def test_an_unterminated_string_full_of_escaped_quotes_is_refused_in_linear_time() -> None:
    # Every escaped quote used to restart the string scan: 32 KB took 8 s, 4 MB forever.
    text = "[" * 100 + '"' + '\\"' * (DEFAULT_MAX_MESSAGE_BYTES // 2 - 60)
    started = time.perf_counter()
    assert isinstance(_error_of(text), ParseError)
    # Generous for a loaded 2-core machine; the quadratic scan needs hours at this size.
    assert time.perf_counter() - started < 2.0


def test_brackets_after_an_unterminated_string_are_not_json_and_not_nesting() -> None:
    text = '{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":"' + "[" * 100
    assert isinstance(_error_of(text, DecodeLimits(max_depth=4)), ParseError)


def test_wide_but_shallow_input_is_accepted() -> None:
    params = {"items": [[i] for i in range(5000)]}
    text = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "x", "params": params})
    assert isinstance(decode_message(text, DecodeLimits(max_depth=4)), Request)


def test_oversize_input_is_rejected_before_parsing() -> None:
    with pytest.raises(MessageTooLarge) as caught:
        decode_message(b"x" * 101, DecodeLimits(max_message_bytes=100))
    assert caught.value.size_bytes == 101


def test_encoding_is_compact_utf8_and_round_trips() -> None:
    request = Request(id="é", method="tools/call", params={"name": "日本", "arguments": {}})
    data = encode_message(request)
    assert b"\n" not in data
    assert "日本".encode() in data
    assert decode_message(data) == request


def test_encoding_keeps_a_lone_surrogate_as_an_escape() -> None:
    message = decode_message(b'{"jsonrpc":"2.0","method":"x","params":{"s":"\\ud800"}}')
    data = encode_message(message)
    assert b"\\ud800" in data
    assert decode_message(data) == message


def test_encoding_values_json_cannot_hold_is_a_clear_error() -> None:
    with pytest.raises(InvalidRequest):
        encode_message(Request(id=1, method="x", params={"v": float("nan")}))
    with pytest.raises(InvalidRequest):
        encode_message(Request(id=1, method="x", params={"v": {1, 2}}))


def test_models_reject_bad_construction() -> None:
    with pytest.raises(ValueError):
        Response(id=1)
    with pytest.raises(ValueError):
        Response(id=None, result=1)
    with pytest.raises(ValueError):
        Request.model_validate({"id": True, "method": "x"})
