import pickle

import pytest

from transports.envelope import ANONYMOUS, Envelope
from transports.errors import InvalidRequest
from transports.frame import Frame


def test_correlation_key_is_principal_client_and_request() -> None:
    envelope = Envelope(client_id="c1", request_id="r9", principal="alice")
    assert envelope.correlation_key == ("alice", "c1", "r9")


def test_two_clients_with_the_same_request_id_have_different_keys() -> None:
    a = Envelope(client_id="c1", request_id="1")
    b = Envelope(client_id="c2", request_id="1")
    assert a.correlation_key != b.correlation_key


def test_headers_round_trip_every_field() -> None:
    envelope = Envelope(
        client_id="c1",
        request_id="r1",
        principal="bob",
        reply_to="mcp.responses.c1",
        deadline_unix_s=1_800_000_000.25,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="vendor=x",
        idempotency_key="k-1",
        method="tools/call",
        name="add",
        attributes=(("pool", "calc"),),
    )
    assert Envelope.from_headers(envelope.to_headers()) == envelope


def test_missing_headers_give_defaults() -> None:
    envelope = Envelope.from_headers({})
    assert envelope.principal == ANONYMOUS
    assert envelope.deadline_unix_s is None


@pytest.mark.parametrize("value", ["soon", "nan", "inf"])
def test_a_bad_deadline_header_is_rejected(value: str) -> None:
    with pytest.raises(InvalidRequest):
        Envelope.from_headers({"raybus-deadline": value})


def test_an_overlong_header_is_rejected() -> None:
    with pytest.raises(InvalidRequest):
        Envelope.from_headers({"raybus-client-id": "x" * 5000})


def test_deadline_arithmetic_keeps_the_earlier_deadline() -> None:
    envelope = Envelope(deadline_unix_s=100.0)
    assert envelope.with_deadline_in(50, now_unix_s=80).deadline_unix_s == 100.0
    assert envelope.with_deadline_in(5, now_unix_s=80).deadline_unix_s == 85.0
    assert envelope.expired(now_unix_s=100.0)
    assert not envelope.expired(now_unix_s=99.0)
    assert Envelope().remaining_s() is None


def test_envelopes_pickle() -> None:
    envelope = Envelope(client_id="c", request_id="r", deadline_unix_s=1.5)
    assert pickle.loads(pickle.dumps(envelope)) == envelope


def test_an_envelope_and_its_frame_survive_pickling_whole() -> None:
    envelope = Envelope(
        client_id="c",
        request_id="r",
        principal="alice",
        reply_to="raybus/demo/client/x",
        deadline_unix_s=1e9,
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="k=v",
        idempotency_key="i",
        method="tools/call",
        name="echo",
        attributes=(("a", "1"),),
    )
    frame = Frame(envelope, b'{"jsonrpc":"2.0"}')
    assert pickle.loads(pickle.dumps([frame, frame])) == [frame, frame]
    assert pickle.loads(pickle.dumps(envelope)) == envelope
