"""LoggingTransport: structured events, counters, no payloads unless asked, secrets never."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from tests.transports.wrappers.fakes import ScriptedTransport
from transports.envelope import Envelope
from transports.errors import ConnectionClosed
from transports.memory import MemoryTransport
from transports.message import Notification, Request
from transports.wrappers.logging import LoggingTransport, TransportCounters, redact

LOGGER = "tests.wrappers.logging"
CALL = Request(
    id=7,
    method="tools/call",
    params={
        "name": "lookup",
        "arguments": {"customer": "ARGUMENT-VALUE-42", "note": "harmless words"},
        "headers": {"Authorization": "Bearer SECRET-TOKEN-1", "X-Api-Key": "SECRET-KEY-2"},
        "client_secret": "SECRET-3",
        "nested": [{"password": "SECRET-4"}, "basic SECRET-5"],
    },
)
SECRETS = ["SECRET-TOKEN-1", "SECRET-KEY-2", "SECRET-3", "SECRET-4", "SECRET-5"]


@pytest.fixture
async def ends() -> AsyncIterator[tuple[MemoryTransport, MemoryTransport]]:
    raw_a, raw_b = MemoryTransport.pair()
    yield raw_a, raw_b
    await raw_a.close()
    await raw_b.close()


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)


async def test_events_carry_structured_fields_and_no_payload_by_default(
    ends: tuple[MemoryTransport, MemoryTransport], caplog: pytest.LogCaptureFixture
) -> None:
    raw_a, raw_b = ends
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    logger = logging.getLogger(LOGGER)
    sender = LoggingTransport(raw_a, name="requests", logger=logger)
    receiver = LoggingTransport(raw_b, name="worker", logger=logger)
    envelope = Envelope(client_id="c1", request_id="r1", principal="alice")
    await sender.send(CALL, envelope)
    await receiver.receive()
    sent, received = caplog.records
    assert sent.__dict__["event"] == "transport.sent"
    assert received.__dict__["event"] == "transport.received"
    for record, name in ((sent, "requests"), (received, "worker")):
        fields = record.__dict__
        assert (fields["transport"], fields["kind"], fields["method"], fields["rpc_id"]) == (
            name,
            "request",
            "tools/call",
            7,
        )
        assert (fields["client_id"], fields["request_id"]) == ("c1", "r1")
        assert fields["bytes"] > 100
        assert "payload" not in fields
    logged = everything_logged(caplog)
    assert "ARGUMENT-VALUE-42" not in logged
    assert "alice" not in logged  # the principal is an identity: not logged either
    assert not [secret for secret in SECRETS if secret in logged]


async def test_payload_logging_shows_arguments_but_never_secrets(
    ends: tuple[MemoryTransport, MemoryTransport], caplog: pytest.LogCaptureFixture
) -> None:
    raw_a, raw_b = ends
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    logger = logging.getLogger(LOGGER)
    await LoggingTransport(raw_a, logger=logger, log_payloads=True).send(CALL)
    await LoggingTransport(raw_b, logger=logger, log_payloads=True).receive()
    logged = everything_logged(caplog)
    assert logged.count("ARGUMENT-VALUE-42") >= 2
    assert "harmless words" in logged
    assert not [secret for secret in SECRETS if secret in logged]


async def test_counters_count_messages_bytes_and_failures(
    ends: tuple[MemoryTransport, MemoryTransport], caplog: pytest.LogCaptureFixture
) -> None:
    raw_a, raw_b = ends
    sender, receiver = LoggingTransport(raw_a), LoggingTransport(raw_b)
    for i in range(3):
        await sender.send(Notification(method="n", params={"i": i}))
    for _ in range(3):
        await receiver.receive()
    sent = sender.counters()
    assert (sent.sent, sent.send_failed, sent.received) == (3, 0, 0)
    assert sent.bytes_sent == 3 * len(b'{"jsonrpc":"2.0","method":"n","params":{"i":0}}')
    assert receiver.counters().received == 3
    assert receiver.counters().bytes_received == 3 * len(
        b'{"jsonrpc":"2.0","method":"n","params":{"i":0}}'
    )
    await raw_b.close()
    caplog.set_level(logging.WARNING)
    with pytest.raises(ConnectionClosed):
        await sender.send(Notification(method="late"))
    with pytest.raises(ConnectionClosed):
        await receiver.receive()
    assert sender.counters().send_failed == 1
    assert receiver.counters().receive_failed == 1
    assert [r.__dict__["event"] for r in caplog.records] == [
        "transport.send_failed",
        "transport.receive_failed",
    ]


async def test_counters_start_at_zero_and_wrapping_changes_nothing_on_the_wire() -> None:
    inner = ScriptedTransport()
    logged = LoggingTransport(inner)
    assert logged.counters() == TransportCounters()
    await logged.send(CALL)
    assert inner.sent == [(CALL, None)]


def test_redaction_replaces_secret_members_and_credentials_at_any_depth() -> None:
    redacted = redact(CALL.to_json_dict())
    assert redacted["params"]["arguments"] == CALL.to_json_dict()["params"]["arguments"]
    assert redacted["params"]["headers"] == {
        "Authorization": "[REDACTED]",
        "X-Api-Key": "[REDACTED]",
    }
    assert redacted["params"]["nested"] == [{"password": "[REDACTED]"}, "[REDACTED]"]
    deep: object = "Bearer abc"
    for _ in range(100):
        deep = [deep]
    assert "abc" not in str(redact(deep))
