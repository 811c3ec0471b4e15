import pickle

import pytest

from transports.errors import (
    INVALID_REQUEST,
    PARSE_ERROR,
    BusError,
    BusTimeout,
    ConnectionClosed,
    EnvelopeNotSupported,
    InvalidMessage,
    InvalidRequest,
    MessageTooLarge,
    ParseError,
    PolicyError,
    RoutingError,
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
    PolicyError("rate limited", "rate-limit"),
    RoutingError("no pool serves tool 'x'"),
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
    assert RoutingError.retriable
    assert not MessageTooLarge.retriable
    assert not InvalidRequest.retriable
    assert not PolicyError.retriable


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
