"""Keyed requests through the ledger (actors.worker.keyed), with the pure ledger behind a
fake port: at most one run per key and principal, re-stamped answers, conflicts, and a
duplicate that gives up while the first run still goes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.ledger import PoolLedger
from actors.worker.keyed import (
    KEY_REUSED_MESSAGE,
    KeyedLedgerPort,
    KeyedRuns,
    keyed_ledger_key,
    request_digest,
    restamped,
)
from tests.actors.fakes import FakeClock
from transports.codec import encode_message
from transports.envelope import Envelope
from transports.errors import BusErrorCode
from transports.frame import Frame
from transports.message import Request, Response


class LedgerPort:
    """The ledger actor's keyed methods, in process."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.ledger = PoolLedger(600, 1000, 86_400, 1000, clock or FakeClock())

    async def begin_keyed(
        self, key: str, digest: str, alias: str | None, lost_after_s: float | None
    ) -> tuple[str, Any]:
        decision = self.ledger.begin_keyed(key, digest, alias, lost_after_s)
        return decision.kind.value, decision.response

    async def complete_keyed(self, key: str, response: bytes, alias: str | None) -> None:
        self.ledger.complete_keyed(key, response, alias)

    async def abandon_keyed(self, key: str, alias: str | None) -> None:
        self.ledger.abandon_keyed(key, alias)


def runs(
    port: LedgerPort, duplicate_wait_s: float = 30.0, lost_after_s: float | None = None
) -> KeyedRuns:
    async def ledger() -> KeyedLedgerPort:
        return port

    return KeyedRuns(ledger, duplicate_wait_s, lost_after_s)


def frame(
    request_id: int, text: str = "hi", *, key: str = "order-1", principal: str = "ship-7"
) -> Frame:
    envelope = Envelope(
        client_id="c",
        request_id=str(request_id),
        principal=principal,
        method="tools/call",
        name="append",
        idempotency_key=key,
    )
    params = {"name": "append", "arguments": {"text": text}, "_meta": {"progressToken": request_id}}
    return Frame.of(envelope, Request(id=request_id, method="tools/call", params=params))


class Tool:
    """Counts its runs; answers with the text it was given."""

    def __init__(self) -> None:
        self.runs = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()

    def serving(self, request: Frame) -> Any:
        async def serve() -> Response | None:
            self.runs += 1
            self.started.set()
            await self.release.wait()
            message = request.decode()
            assert isinstance(message, Request)
            assert isinstance(message.params, dict)
            return Response.success(message.id, {"text": message.params["arguments"]["text"]})

        return serve


async def test_a_key_sent_twice_runs_once_and_each_answer_carries_its_own_id() -> None:
    port, tool = LedgerPort(), Tool()
    first, second = frame(1), frame(2)
    one = await runs(port).run(first, tool.serving(first))
    two = await runs(port).run(second, tool.serving(second))
    assert tool.runs == 1
    assert (one.ran, two.ran) == (True, False)
    assert one.response == Response.success(1, {"text": "hi"})
    assert two.response == Response.success(2, {"text": "hi"})


async def test_the_same_key_of_another_principal_runs_apart() -> None:
    port, tool = LedgerPort(), Tool()
    mine, theirs = frame(1, principal="ship-7"), frame(2, principal="ship-8")
    await runs(port).run(mine, tool.serving(mine))
    outcome = await runs(port).run(theirs, tool.serving(theirs))
    assert tool.runs == 2
    assert outcome.ran
    assert keyed_ledger_key(mine.envelope) == "k\x1fship-7\x1forder-1"


async def test_a_key_reused_with_other_arguments_is_refused_without_running() -> None:
    port, tool = LedgerPort(), Tool()
    first, other = frame(1, "hi"), frame(2, "bye")
    await runs(port).run(first, tool.serving(first))
    outcome = await runs(port).run(other, tool.serving(other))
    assert tool.runs == 1
    assert outcome.response == Response.failure(
        2, BusErrorCode.IDEMPOTENCY_KEY_REUSED, KEY_REUSED_MESSAGE
    )


async def test_meta_changes_between_resends_do_not_change_the_digest() -> None:
    one, two = frame(1), frame(2)  # progress tokens differ in _meta
    assert request_digest(one.envelope, one.decode()) == request_digest(two.envelope, two.decode())
    other = frame(3, "bye")
    assert request_digest(one.envelope, one.decode()) != request_digest(
        other.envelope, other.decode()
    )


async def test_a_duplicate_that_outwaits_the_running_call_is_told_running_and_stores_nothing() -> (
    None
):
    port, tool = LedgerPort(), Tool()
    tool.release.clear()
    first, duplicate, resend = frame(1), frame(2), frame(3)
    running = asyncio.ensure_future(runs(port).run(first, tool.serving(first)))
    async with asyncio.timeout(30):
        await tool.started.wait()
    told = await runs(port, duplicate_wait_s=0.3).run(duplicate, tool.serving(duplicate))
    assert told.response is not None
    assert told.response.error is not None
    assert told.response.error.code == BusErrorCode.OUTCOME_UNKNOWN
    assert told.response.error.data == {"stage": "running"}
    assert told.response.id == 2
    tool.release.set()
    async with asyncio.timeout(30):
        await running
    answered = await runs(port).run(resend, tool.serving(resend))
    assert tool.runs == 1
    assert answered.response == Response.success(3, {"text": "hi"})


async def test_a_duplicate_waiting_in_time_gets_the_first_runs_answer() -> None:
    port, tool = LedgerPort(), Tool()
    tool.release.clear()
    first, duplicate = frame(1), frame(2)
    running = asyncio.ensure_future(runs(port).run(first, tool.serving(first)))
    async with asyncio.timeout(30):
        await tool.started.wait()
    waiting = asyncio.ensure_future(runs(port).run(duplicate, tool.serving(duplicate)))
    tool.release.set()
    async with asyncio.timeout(30):
        await running
        outcome = await waiting
    assert tool.runs == 1
    assert outcome.response == Response.success(2, {"text": "hi"})


async def test_a_cancelled_run_gives_its_key_back_to_the_resend() -> None:
    port = LedgerPort()
    cancelled = frame(1)

    async def no_answer() -> Response | None:
        return None

    assert (await runs(port).run(cancelled, no_answer)).response is None
    tool, resend = Tool(), frame(2)
    outcome = await runs(port).run(resend, tool.serving(resend))
    assert tool.runs == 1
    assert outcome.ran


async def test_a_run_that_raises_gives_its_key_back() -> None:
    port, first = LedgerPort(), frame(1)

    async def broken() -> Response | None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await runs(port).run(first, broken)
    tool, resend = Tool(), frame(2)
    assert (await runs(port).run(resend, tool.serving(resend))).ran


def test_restamped_replaces_only_the_id() -> None:
    stored = encode_message(Response.failure(7, 1007, "upstream", {"x": 1}))
    assert restamped(stored, "abc") == Response.failure("abc", 1007, "upstream", {"x": 1})


async def test_a_key_held_longer_than_any_run_lasts_is_lost_for_good_and_never_rerun() -> None:
    clock = FakeClock()
    port, tool, stale = LedgerPort(clock), Tool(), frame(1)
    digest = request_digest(stale.envelope, stale.decode())
    port.ledger.begin_keyed(keyed_ledger_key(stale.envelope), digest)  # a worker that died
    clock.advance(301)
    outcome = await runs(port, lost_after_s=300).run(stale, tool.serving(stale))
    assert tool.runs == 0
    assert outcome.response is not None
    assert outcome.response.error is not None
    assert outcome.response.error.code == BusErrorCode.OUTCOME_UNKNOWN
    assert outcome.response.error.data == {"stage": "run"}
    later = await runs(port).run(frame(2), tool.serving(frame(2)))  # stored: final
    assert tool.runs == 0
    assert later.response is not None
    assert later.response.id == 2
    assert later.response.error == outcome.response.error
