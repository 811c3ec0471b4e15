import pickle

import pytest

from transports.errors import (
    INVALID_REQUEST,
    PARSE_ERROR,
    BusError,
    BusErrorCode,
    BusTimeout,
    CallError,
    ConnectionClosed,
    EnvelopeNotSupported,
    InvalidMessage,
    InvalidRequest,
    MessageTooLarge,
    ParseError,
    TransportError,
)

EXAMPLES: list[BusError] = [
    BusError("root"),
    TransportError("pipe"),
    ConnectionClosed("peer went away"),
    MessageTooLarge(10, 5),
    EnvelopeNotSupported("stdio"),
    InvalidMessage("bad", 7),
    ParseError("not json"),
    InvalidRequest("no method", "abc"),
    CallError("tools/call", 1008, "rate limited", {"retryAfterSeconds": 0.5}),
    BusTimeout("tools/call", 2.5),
]


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_error_survives_pickling_with_its_fields_and_message(error: BusError) -> None:
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert str(clone) == str(error)
    assert vars(clone) == vars(error)
    assert clone.retriable == error.retriable


def test_retriable_is_declared_per_class() -> None:
    assert ConnectionClosed.retriable
    assert BusTimeout.retriable
    assert not MessageTooLarge.retriable
    assert not InvalidRequest.retriable
    assert not CallError.retriable


def test_invalid_message_errors_carry_their_json_rpc_codes() -> None:
    assert ParseError("x").error_object()["code"] == PARSE_ERROR
    assert InvalidRequest("x", 3).error_object() == {
        "code": INVALID_REQUEST,
        "message": "Invalid Request",
        "data": {"detail": "x"},
    }


def test_every_error_is_a_bus_error() -> None:
    for error in EXAMPLES:
        assert isinstance(error, BusError)


def test_our_codes_are_one_table_outside_the_reserved_json_rpc_range() -> None:
    codes = [int(code) for code in BusErrorCode]
    assert codes == list(range(1001, 1001 + len(codes)))
    assert not any(-32768 <= code <= -32000 for code in codes)
