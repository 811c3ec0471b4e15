"""The trigger loop over fake ports: acks after writes, dead letters, retries, backpressure."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from actors.triggers.core import TriggerCore, TriggerPorts, TriggerRules, call_key
from actors.triggers.record import TriggerRecord
from actors.triggers.template import Template
from transports.errors import BusErrorCode, BusTimeout, CallError, MessageTooLarge


def record(offset: int, value: Any, partition: int = 0) -> TriggerRecord:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return TriggerRecord(
        raw_key=f"k{offset}".encode(),
        raw_value=raw,
        raw_headers=(("shop", b"berlin"),),
        topic="orders",
        partition=partition,
        offset=offset,
        timestamp_ms=5,
    )


@dataclass
class FakeDelivery:
    record: TriggerRecord
    source: FakeSource

    async def ack(self) -> None:
        self.source.acked.append(self.record.offset)
        self.source.unsettled -= 1
        self.source.log.append(("ack", self.record.offset))


@dataclass
class FakeSource:
    records: asyncio.Queue[TriggerRecord] = field(default_factory=asyncio.Queue)
    acked: list[int] = field(default_factory=list)
    unsettled: int = 0
    unsettled_at_receive: list[int] = field(default_factory=list)
    log: list[tuple[str, int]] = field(default_factory=list)
    batches: bool = False
    limits: list[int] = field(default_factory=list)

    async def receive(self, limit: int) -> list[FakeDelivery]:
        """One record, or (``batches``) as many as are queued up to ``limit``."""
        self.unsettled_at_receive.append(self.unsettled)
        self.limits.append(limit)
        taken = [await self.records.get()]
        while self.batches and len(taken) < limit and not self.records.empty():
            taken.append(self.records.get_nowait())
        self.unsettled += len(taken)
        return [FakeDelivery(record, self) for record in taken]


@dataclass
class FakeSink:
    source: FakeSource
    written: list[tuple[bytes | None, bytes, dict[str, bytes]]] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)  # raised first, in order

    async def write(
        self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.written.append((key, value, dict(headers)))
        self.source.log.append(("write", int(dict(headers)["raybus-source"].split(b"/")[-1])))


Behaviour = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class FakeCaller:
    behaviour: Behaviour
    calls: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    async def call(
        self, tool: str, arguments: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        self.calls.append(arguments)
        self.keys.append(idempotency_key)
        return await self.behaviour(arguments)


async def echo(arguments: dict[str, Any]) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": "ok"}], "structuredContent": arguments}


def template_mapper(arguments: dict[str, Any]) -> Callable[[TriggerRecord], Awaitable[Any]]:
    template = Template.parse(arguments)

    async def mapper(record: TriggerRecord) -> dict[str, Any]:
        return template.render(record.view())

    return mapper


@dataclass
class Rig:
    source: FakeSource
    output: FakeSink
    dead: FakeSink
    caller: FakeCaller
    core: TriggerCore
    sleeps: list[float]


def rig(
    behaviour: Behaviour = echo,
    mapper: Callable[[TriggerRecord], Awaitable[Any]] | None = None,
    **rules: Any,
) -> Rig:
    source = FakeSource()
    output, dead = FakeSink(source), FakeSink(source)
    caller = FakeCaller(behaviour)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    ports = TriggerPorts(
        source=source,
        caller=caller,
        mapper=mapper or template_mapper({"id": "${value.id}"}),
        dead_letter=dead,
        output=output,
        sleep=sleep,
    )
    core = TriggerCore(TriggerRules(name="t", tool="score", **rules), ports)
    return Rig(source, output, dead, caller, core, sleeps)


async def run_until(r: Rig, done: Callable[[], bool]) -> None:
    runner = asyncio.create_task(r.core.run())
    try:
        async with asyncio.timeout(10):
            while not done():  # noqa: ASYNC110 - the fakes settle on the loop
                await asyncio.sleep(0.001)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await r.core.drain(5)


async def test_each_record_is_acked_only_after_its_output_is_written() -> None:
    r = rig()
    for i in range(20):
        r.source.records.put_nowait(record(i, {"id": i}))
    await run_until(r, lambda: len(r.source.acked) == 20)
    assert sorted(r.source.acked) == list(range(20))
    for i in range(20):
        assert r.source.log.index(("write", i)) < r.source.log.index(("ack", i))
    key, value, headers = r.output.written[0]
    assert json.loads(value)["result"]["structuredContent"] == {"id": 0}
    assert headers["raybus-trigger-key"] == b"kafka/orders/0/0/5"
    assert key == b"k0"
    assert r.core.stats.ok == 20


async def test_a_sink_failing_twice_is_written_then_acked_once() -> None:
    r = rig()
    r.output.failures += [OSError("broker away"), OSError("still away")]
    r.source.records.put_nowait(record(0, {"id": 0}))
    await run_until(r, lambda: r.source.acked == [0])
    assert len(r.output.written) == 1
    assert r.source.log == [("write", 0), ("ack", 0)]
    assert r.core.stats.stalled is None


async def test_a_record_without_the_referenced_field_is_dead_lettered_unchanged() -> None:
    r = rig()
    r.source.records.put_nowait(record(0, b"not json"))
    await run_until(r, lambda: r.source.acked == [0])
    assert r.caller.calls == []
    key, value, headers = r.dead.written[0]
    assert (key, value) == (b"k0", b"not json")
    assert headers["shop"] == b"berlin"  # the record's own headers kept
    assert headers["raybus-error-stage"] == b"mapping"
    assert headers["raybus-error-message"] == b"the record has no value.id"
    assert headers["raybus-source"] == b"orders/0/0"


async def test_tool_errors_and_json_rpc_errors_go_to_the_dead_letter_with_their_code() -> None:
    async def behaviour(arguments: dict[str, Any]) -> dict[str, Any]:
        if arguments["id"] == 0:
            return {"content": [{"type": "text", "text": "bad order"}], "isError": True}
        raise CallError("tools/call", -32602, "invalid arguments")

    r = rig(behaviour)
    r.source.records.put_nowait(record(0, {"id": 0}))
    r.source.records.put_nowait(record(1, {"id": 1}))
    await run_until(r, lambda: len(r.source.acked) == 2)
    by_offset = {h["raybus-source"]: h for _, _, h in r.dead.written}
    tool_error = by_offset[b"orders/0/0"]
    assert tool_error["raybus-error-code"] == b"isError"
    assert tool_error["raybus-error-message"] == b"bad order"
    rpc_error = by_offset[b"orders/0/1"]
    assert rpc_error["raybus-error-code"] == b"-32602"
    assert rpc_error["raybus-error-stage"] == b"call"
    assert r.output.written == []
    assert r.core.stats.snapshot()["dead_lettered"] == 2


async def test_tool_errors_go_to_the_output_when_configured() -> None:
    async def behaviour(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"content": [], "isError": True}

    r = rig(behaviour, tool_errors="output", output_format="result")
    r.source.records.put_nowait(record(0, {"id": 0}))
    await run_until(r, lambda: r.source.acked == [0])
    assert json.loads(r.output.written[0][1]) == {"content": [], "isError": True}
    assert r.dead.written == []


async def test_overloaded_is_called_again_and_gives_up_after_max_attempts() -> None:
    attempts: dict[int, int] = {}

    async def behaviour(arguments: dict[str, Any]) -> dict[str, Any]:
        attempts[arguments["id"]] = attempts.get(arguments["id"], 0) + 1
        if arguments["id"] == 0 and attempts[0] < 3:
            raise CallError("tools/call", BusErrorCode.OVERLOADED, "queue full")
        if arguments["id"] == 1:
            raise CallError("tools/call", BusErrorCode.CIRCUIT_OPEN, "breaker open")
        return await echo(arguments)

    r = rig(behaviour, max_attempts=4, backoff_s=0.5, max_backoff_s=1.0)
    r.source.records.put_nowait(record(0, {"id": 0}))
    r.source.records.put_nowait(record(1, {"id": 1}))
    await run_until(r, lambda: len(r.source.acked) == 2)
    assert attempts == {0: 3, 1: 4}
    assert len(r.output.written) == 1
    ((_, _, headers),) = r.dead.written
    assert headers["raybus-attempts"] == b"4"
    assert headers["raybus-error-code"] == b"1003"
    assert r.core.stats.retried == 2 + 3
    assert max(r.sleeps) == 1.0  # backoff capped


async def test_a_call_that_may_have_run_is_asked_again_with_its_key_until_the_ledger_tells() -> (
    None
):
    # No answer in time, then "may have run" (1004): both asked again with the same key;
    # the ledger's answer ends it (here: the stored result).
    answers: list[Exception | None] = [
        BusTimeout("tools/call", 1.0),
        CallError("tools/call", BusErrorCode.OUTCOME_UNKNOWN, "worker lost"),
        CallError(
            "tools/call", BusErrorCode.OUTCOME_UNKNOWN, "still running", {"stage": "running"}
        ),
        None,
    ]

    async def behaviour(arguments: dict[str, Any]) -> dict[str, Any]:
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return await echo(arguments)

    r = rig(behaviour)
    r.source.records.put_nowait(record(0, {"id": 0}))
    await run_until(r, lambda: len(r.source.acked) == 1)
    assert r.caller.keys == ["trigger:t:kafka/orders/0/0/5"] * 4  # one key, every attempt
    assert len(r.output.written) == 1
    assert r.dead.written == []


async def test_the_ledgers_lost_and_exhausted_attempts_are_dead_lettered() -> None:
    async def behaviour(arguments: dict[str, Any]) -> dict[str, Any]:
        if arguments["id"] == 0:
            raise BusTimeout("tools/call", 1.0)
        lost = {"stage": "run"}  # the ledger's "lost": the call may have run, never again
        raise CallError("tools/call", BusErrorCode.OUTCOME_UNKNOWN, "worker lost", lost)

    r = rig(behaviour, max_attempts=3)
    r.source.records.put_nowait(record(0, {"id": 0}))
    r.source.records.put_nowait(record(1, {"id": 1}))
    await run_until(r, lambda: len(r.source.acked) == 2)
    assert sorted(a["id"] for a in r.caller.calls) == [0, 0, 0, 1]
    codes = sorted(h["raybus-error-code"] for _, _, h in r.dead.written)
    assert codes == [b"1001", b"1004"]


def test_a_records_call_key_is_its_source_identity_per_trigger_and_fits_the_bus() -> None:
    assert call_key("t", record(7, {})) == "trigger:t:kafka/orders/0/7/5"
    assert call_key("u", record(7, {})) != call_key("t", record(7, {}))
    long = TriggerRecord(raw_key=None, raw_value=b"{}", topic="x" * 300, offset=1)
    key = call_key("t", long)
    assert key.startswith("trigger:t:sha256:")
    assert len(key) <= 200
    assert key == call_key("t", long)  # stable across redeliveries


async def test_an_output_too_large_is_dead_lettered_at_stage_output() -> None:
    r = rig()
    r.output.failures.append(MessageTooLarge(2_000_000, 1_000_000))
    r.source.records.put_nowait(record(0, {"id": 0}))
    await run_until(r, lambda: r.source.acked == [0])
    assert r.dead.written[0][2]["raybus-error-stage"] == b"output"


async def test_structured_output_without_structured_content_is_dead_lettered() -> None:
    async def behaviour(arguments: dict[str, Any]) -> dict[str, Any]:
        return {"content": []}

    r = rig(behaviour, output_format="structured")
    r.source.records.put_nowait(record(0, {"id": 0}))
    await run_until(r, lambda: r.source.acked == [0])
    assert r.dead.written[0][2]["raybus-error-stage"] == b"output"


async def test_in_flight_never_exceeds_max_and_nothing_is_received_while_full() -> None:
    gate = asyncio.Event()
    running = 0
    most = 0

    async def behaviour(arguments: dict[str, Any]) -> dict[str, Any]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1
        return await echo(arguments)

    r = rig(behaviour, max_in_flight=4)
    for i in range(30):
        r.source.records.put_nowait(record(i, {"id": i}))
    runner = asyncio.create_task(r.core.run())
    async with asyncio.timeout(10):
        while running < 4:  # noqa: ASYNC110 - the fakes settle on the loop
            await asyncio.sleep(0.001)
    for _ in range(50):  # the loop gets every chance to take a fifth record
        await asyncio.sleep(0)
    assert r.source.unsettled == 4
    assert len(r.source.unsettled_at_receive) == 4  # no fifth receive while full
    assert r.core.stats.in_flight == 4
    gate.set()
    async with asyncio.timeout(10):
        while len(r.source.acked) < 30:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert most == 4
    assert max(r.source.unsettled_at_receive) <= 3


async def test_a_batching_source_is_asked_for_the_free_slots_at_most() -> None:
    gate = asyncio.Event()

    async def behaviour(arguments: dict[str, Any]) -> dict[str, Any]:
        await gate.wait()
        return await echo(arguments)

    r = rig(behaviour, max_in_flight=16)
    r.source.batches = True
    for i in range(40):
        r.source.records.put_nowait(record(i, {"id": i}))
    runner = asyncio.create_task(r.core.run())
    async with asyncio.timeout(10):
        while r.source.unsettled < 16:  # noqa: ASYNC110 - the fakes settle on the loop
            await asyncio.sleep(0.001)
    for _ in range(50):  # the loop gets every chance to ask for more while full
        await asyncio.sleep(0)
    assert r.source.limits == [10, 6]  # ten at most per receive, then the six slots left
    assert r.core.stats.in_flight == 16
    gate.set()
    async with asyncio.timeout(10):
        while len(r.source.acked) < 40:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert sorted(r.source.acked) == list(range(40))
    for limit, unsettled in zip(r.source.limits, r.source.unsettled_at_receive, strict=True):
        assert unsettled + limit <= 16  # never more records in hand than max_in_flight


async def test_ordered_holds_one_record_per_partition_at_a_time() -> None:
    running: dict[int, int] = {}
    overlap = False

    async def behaviour(arguments: dict[str, Any]) -> dict[str, Any]:
        nonlocal overlap
        partition = arguments["id"] % 2
        running[partition] = running.get(partition, 0) + 1
        overlap = overlap or running[partition] > 1
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        running[partition] -= 1
        return await echo(arguments)

    r = rig(behaviour, ordered=True, max_in_flight=8)
    for i in range(20):
        r.source.records.put_nowait(record(i, {"id": i}, partition=i % 2))
    await run_until(r, lambda: len(r.source.acked) == 20)
    assert not overlap
    for partition in (0, 1):
        written = [
            int(h["raybus-source"].split(b"/")[-1])
            for _, _, h in r.output.written
            if h["raybus-source"].split(b"/")[1] == str(partition).encode()
        ]
        assert written == sorted(written)


async def test_drain_leaves_unfinished_records_unacked() -> None:
    gate = asyncio.Event()

    async def behaviour(arguments: dict[str, Any]) -> dict[str, Any]:
        await gate.wait()
        return await echo(arguments)

    r = rig(behaviour, max_in_flight=2)
    for i in range(2):
        r.source.records.put_nowait(record(i, {"id": i}))
    runner = asyncio.create_task(r.core.run())
    async with asyncio.timeout(10):
        while len(r.caller.calls) < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert await r.core.drain(0.01) == 2
    assert r.source.acked == []
    assert r.core.stats.in_flight == 0


async def test_a_map_returning_none_skips_the_record() -> None:
    async def skip_odd(rec: TriggerRecord) -> dict[str, Any] | None:
        return None if rec.offset % 2 else {"id": rec.offset}

    r = rig(mapper=skip_odd)
    for i in range(4):
        r.source.records.put_nowait(record(i, {"id": i}))
    await run_until(r, lambda: len(r.source.acked) == 4)
    assert r.core.stats.skipped == 2
    assert [c["id"] for c in r.caller.calls] == [0, 2]
