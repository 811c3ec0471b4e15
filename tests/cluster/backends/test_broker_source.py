"""A broker worker's own count of the calls it ends (no router sees them), without Ray:
the source runs over in-memory deliveries, a fake server and a fake ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from actors.discovery.catalog import Catalog
from actors.ledger import DecisionKind
from actors.router.outcomes import CallTally
from cluster.backends.broker_source import BrokerWorkerSource, one_at_a_time
from transports.base import Delivery
from transports.codec import decode_message
from transports.envelope import Envelope
from transports.errors import INVALID_PARAMS, BusErrorCode, ConnectionClosed
from transports.frame import Frame
from transports.message import Request, Response


class Remote:
    """A Ray actor method as the source awaits it: ``method.remote(...)``."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self._method = method

    async def remote(self, *args: Any) -> Any:
        return self._method(*args)


class FakeLedger:
    """Keys marked ``done`` answer from the ledger; ``held`` stay in progress elsewhere."""

    def __init__(self, done: set[str], held: set[str]) -> None:
        self._done, self._held = done, held
        self.asked: list[str] = []  # every key begun or completed, in order
        self.begin = Remote(self._begin)
        self.peek = Remote(self._peek)
        self.complete = Remote(lambda key, body: None)
        self.begin_many = Remote(lambda keys: [self._begin(key) for key in keys])
        self.complete_many = Remote(lambda answers: [self._completed(k) for k, _ in answers])
        self.abandon = Remote(lambda key: None)

    def _completed(self, key: str) -> bool:
        self.asked.append(key)
        return True

    def _begin(self, key: str) -> tuple[str, bytes | None]:
        self.asked.append(key)
        return (
            self._peek(key)
            if key.endswith(tuple(self._done | self._held))
            else (
                DecisionKind.NEW.value,
                None,
            )
        )

    def _peek(self, key: str) -> tuple[str, bytes | None]:
        if key.endswith(tuple(self._done)):
            return DecisionKind.DONE.value, b'{"jsonrpc":"2.0","id":1,"result":{}}'
        return DecisionKind.IN_PROGRESS.value, None


class FakeServer:
    """Answers by tool: ``echo`` fine, ``fail`` a tool error, ``bad`` a JSON-RPC error;
    ``lookup`` fine too, and its catalog marks it read-only."""

    def __init__(self) -> None:
        self.called: list[str] = []
        self.catalog = Catalog.of(
            tools=[
                {"name": "echo", "inputSchema": {"type": "object"}},
                {
                    "name": "lookup",
                    "inputSchema": {"type": "object"},
                    "annotations": {"readOnlyHint": True},
                },
            ]
        )

    async def call(self, frame: Frame, timeout_s: float | None) -> Response | None:
        self.called.append(frame.envelope.request_id)
        request = frame.decode()
        assert isinstance(request, Request)
        tool = frame.envelope.name
        if tool == "bad":
            return Response.failure(request.id, INVALID_PARAMS, "no")
        return Response.success(request.id, {"content": [], "isError": tool == "fail"})


class Deliveries:
    """``calls`` as deliveries; ``expired`` ones past their deadline; the first
    ``broker_away`` receives fail as an unreachable broker does."""

    def __init__(
        self,
        calls: list[tuple[str, str]],
        expired: set[str],
        broker_away: int = 0,
        unforeseen: int = 0,
    ) -> None:
        self._expired = expired
        self._broker_away = broker_away
        self._unforeseen = unforeseen
        self.acked = 0
        self.all_acked = asyncio.Event()
        self._pending = [self._delivery(i, tool, rid) for i, (tool, rid) in enumerate(calls)]
        self._total = len(calls)

    def _delivery(self, i: int, tool: str, request_id: str) -> Delivery:
        request = Request(id=i, method="tools/call", params={"name": tool, "arguments": {}})
        envelope = Envelope(
            client_id="c", request_id=request_id, reply_to="replies", method="tools/call", name=tool
        )
        if request_id in self._expired:
            envelope = envelope.with_deadline_in(-1.0)
        return Delivery(request, envelope, _ack=self._ack)

    async def _ack(self) -> None:
        self.acked += 1
        if self.acked == self._total:
            self.all_acked.set()

    async def start(self) -> None:
        return None

    async def receive(self) -> Delivery:
        if self._broker_away:
            self._broker_away -= 1
            raise ConnectionClosed("SQS receive_message unavailable: connection refused")
        if self._unforeseen:
            self._unforeseen -= 1
            raise RuntimeError("a client error nobody translated")
        if not self._pending:
            await asyncio.Event().wait()  # nothing more: wait to be stopped
            raise ConnectionClosed("closed")
        return self._pending.pop(0)

    def is_connected(self) -> bool:
        return True  # never closed here: a failing receive is the broker's

    async def close(self) -> None:
        return None


async def served(
    calls: list[tuple[str, str]],
    *,
    done: set[str],
    held: set[str],
    expired: frozenset[str] = frozenset(),
    broker_away: int = 0,
    unforeseen: int = 0,
    server: FakeServer | None = None,
    published: dict[str, bytes] | None = None,
    ledger: FakeLedger | None = None,
    withdrawn: tuple[str, ...] = (),
) -> BrokerWorkerSource:
    """A source that took ``calls`` and answered every one."""
    answers: dict[str, bytes] = {} if published is None else published

    async def publish(destination: str, body: bytes, envelope: Envelope) -> None:
        answers[envelope.request_id] = body

    deliveries = Deliveries(calls, set(expired), broker_away, unforeseen)
    source = BrokerWorkerSource(
        deliveries,
        one_at_a_time(publish),
        server or FakeServer(),  # type: ignore[arg-type]
        ledger or FakeLedger(done, held),
        pool="kit",
        capacity=4,
        call_timeout_s=5,
        duplicate_wait_s=0.2,
    )
    # Cancels that reached this worker before the calls did.
    source.withdraw([Envelope(client_id="c", request_id=rid).correlation_key for rid in withdrawn])
    await source.start()
    async with asyncio.timeout(10):
        await deliveries.all_acked.wait()
    await source.stop(timeout_s=5)
    assert sorted(answers) == sorted(rid for _, rid in calls)  # every call answered
    return source


async def test_each_call_a_broker_worker_ends_is_counted_once_by_outcome() -> None:
    calls = [("echo", "r1"), ("echo", "r2"), ("fail", "r3"), ("bad", "r4")]
    calls += [("echo", "replayed"), ("echo", "held")]
    tally = (await served(calls, done={"replayed"}, held={"held"})).calls_ended()
    assert tally.outcomes == {
        ("kit", "echo", "ok"): 2,
        ("kit", "fail", "tool_error"): 1,
        ("kit", "bad", "error"): 1,
        # Another worker's run that never finished: reported lost, counted here.
        ("kit", "echo", "lost"): 1,
        # The redelivered copy of a finished call ("replayed") is not counted again.
    }
    # Calls this worker ran are timed; a lost one has no duration of its own.
    assert len(tally.latencies_s["kit"]) == 4
    assert all(0 <= s < 10 for s in tally.latencies_s["kit"])


async def test_a_read_only_call_skips_the_ledger_and_a_redelivered_copy_runs_again() -> None:
    # "lookup" is read-only: neither begun nor completed in the ledger, so the copy of a
    # call the ledger would answer from its store ("replayed") runs again here. "echo"
    # makes no such promise: its calls go through the ledger as before.
    ledger = FakeLedger(done={"replayed-e"}, held=set())
    server = FakeServer()
    calls = [("lookup", "l1"), ("lookup", "replayed-l"), ("echo", "e1"), ("echo", "replayed-e")]
    source = await served(calls, done=set(), held=set(), server=server, ledger=ledger)
    assert sorted(server.called) == ["e1", "l1", "replayed-l"]
    assert all(key.endswith(("e1", "replayed-e")) for key in ledger.asked)
    assert sum(key.endswith("e1") for key in ledger.asked) == 2  # begun, then completed
    assert source.calls_ended().outcomes == {("kit", "lookup", "ok"): 2, ("kit", "echo", "ok"): 1}


async def test_a_read_only_call_cancelled_before_it_arrived_is_answered_cancelled_not_run() -> None:
    # A read-only call never asks the ledger, where its client withdrew it; the cancel
    # every worker of the pool was sent is what stops it here.
    server = FakeServer()
    answers: dict[str, bytes] = {}
    calls = [("lookup", "gone"), ("lookup", "kept")]
    await served(
        calls, done=set(), held=set(), server=server, published=answers, withdrawn=("gone",)
    )
    assert server.called == ["kept"]
    cancelled = decode_message(answers["gone"])
    assert isinstance(cancelled, Response)
    assert cancelled.error is not None
    assert cancelled.error.code == BusErrorCode.CANCELLED


async def test_a_call_withdrawn_while_the_ledger_decided_is_answered_cancelled_not_run() -> None:
    # The ledger said NEW (its client's withdraw came after this worker's begin), and
    # the cancel reached this worker before the call reached its server: it must not
    # run then. It did, to its end, in a loaded 2-worker test run (Kafka, a 600 s nap).
    server = FakeServer()
    ledger = FakeLedger(done=set(), held=set())
    answers: dict[str, bytes] = {}
    calls = [("echo", "gone"), ("echo", "kept")]
    source = await served(
        calls,
        done=set(),
        held=set(),
        server=server,
        ledger=ledger,
        published=answers,
        withdrawn=("gone",),
    )
    assert server.called == ["kept"]
    cancelled = decode_message(answers["gone"])
    assert isinstance(cancelled, Response)
    assert cancelled.error is not None
    assert cancelled.error.code == BusErrorCode.CANCELLED
    # Stored as its outcome: a redelivered copy is answered the same, never run.
    assert sum(key.endswith("gone") for key in ledger.asked) == 2  # begun, then completed
    assert source.calls_ended().outcomes == {
        ("kit", "echo", "cancelled"): 1,
        ("kit", "echo", "ok"): 1,
    }


async def test_the_tally_is_handed_over_once() -> None:
    source = await served([("echo", "r1")], done=set(), held=set())
    assert source.calls_ended().outcomes == {("kit", "echo", "ok"): 1}
    assert source.calls_ended() == CallTally()


def confirming_source(
    deliveries: Deliveries, publish: Any, server: FakeServer
) -> BrokerWorkerSource:
    """A source of 4 slots whose answers the broker confirms when the test says."""
    return BrokerWorkerSource(
        deliveries,
        publish,
        server,  # type: ignore[arg-type]
        FakeLedger(set(), set()),
        pool="kit",
        capacity=4,
        call_timeout_s=5,
        duplicate_wait_s=0.2,
    )


async def test_answers_are_queued_in_order_without_waiting_for_each_confirmation() -> None:
    # The broker confirms nothing until the test says so: a sender that waited for each
    # confirmation would queue one answer; this one queues all four, in order, and each
    # request is acknowledged only once its own answer is confirmed. One answer the broker
    # refuses leaves its request unacknowledged (redelivered), the others are unaffected.
    calls = [("echo", f"r{i}") for i in range(4)]
    queued: list[str] = []
    confirmations: dict[str, asyncio.Future[None]] = {}

    async def publish(destination: str, body: bytes, envelope: Envelope) -> Awaitable[None]:
        queued.append(envelope.request_id)
        confirmations[envelope.request_id] = asyncio.get_running_loop().create_future()
        return confirmations[envelope.request_id]

    deliveries = Deliveries(calls, expired=set())
    source = confirming_source(deliveries, publish, FakeServer())
    await source.start()
    async with asyncio.timeout(10):
        while len(queued) < 4:  # noqa: ASYNC110 - the source runs on this loop
            await asyncio.sleep(0.01)
    assert sorted(queued) == ["r0", "r1", "r2", "r3"]
    assert deliveries.acked == 0  # nothing confirmed yet: nothing acknowledged
    confirmations["r2"].set_exception(ConnectionClosed("broker gone"))
    for rid in ("r0", "r1", "r3"):
        confirmations[rid].set_result(None)
    async with asyncio.timeout(10):
        while deliveries.acked < 3:  # noqa: ASYNC110 - the source runs on this loop
            await asyncio.sleep(0.01)
    await source.stop(timeout_s=5)
    assert deliveries.acked == 3


async def test_a_request_past_its_deadline_is_answered_1001_and_never_reaches_the_server() -> None:
    server = FakeServer()
    answers: dict[str, bytes] = {}
    source = await served(
        [("echo", "late"), ("echo", "fresh")],
        done=set(),
        held=set(),
        expired=frozenset({"late"}),
        server=server,
        published=answers,
    )
    assert server.called == ["fresh"]
    late = decode_message(answers["late"])
    assert isinstance(late, Response)
    assert late.error is not None
    assert late.error.code == BusErrorCode.DEADLINE_EXCEEDED
    assert late.id == 0  # the caller's own JSON-RPC id
    assert source.calls_ended().outcomes == {
        ("kit", "echo", "timeout"): 1,
        ("kit", "echo", "ok"): 1,
    }


async def test_a_broker_that_goes_away_is_waited_for_not_taken_as_the_end() -> None:
    # Two failed receives (an endpoint restarting), then the calls: all answered.
    source = await served([("echo", "r1"), ("echo", "r2")], done=set(), held=set(), broker_away=2)
    assert source.calls_ended().outcomes == {("kit", "echo", "ok"): 2}


async def test_a_receive_that_raises_unforeseen_errors_is_retried_not_left_dead() -> None:
    # A dead receive loop would leave the pool's partitions assigned and never read.
    source = await served([("echo", "r1"), ("echo", "r2")], done=set(), held=set(), unforeseen=2)
    assert source.calls_ended().outcomes == {("kit", "echo", "ok"): 2}


async def test_expired_requests_hold_no_slot_while_their_answers_are_sent() -> None:
    # A backlog of expired requests behind a busy pool: each is answered without running,
    # so none keeps one of the 4 slots while the broker confirms its answer. All 10 are
    # taken and answered at once, not 4 per broker round trip.
    calls = [("echo", f"late{i}") for i in range(10)]
    confirmations: dict[str, asyncio.Future[None]] = {}

    async def publish(destination: str, body: bytes, envelope: Envelope) -> Awaitable[None]:
        confirmations[envelope.request_id] = asyncio.get_running_loop().create_future()
        return confirmations[envelope.request_id]

    deliveries = Deliveries(calls, expired={rid for _, rid in calls})
    server = FakeServer()
    source = confirming_source(deliveries, publish, server)
    await source.start()
    async with asyncio.timeout(10):
        while len(confirmations) < len(calls):  # noqa: ASYNC110 - the source runs on this loop
            await asyncio.sleep(0.01)
    for confirmed in confirmations.values():
        confirmed.set_result(None)
    async with asyncio.timeout(10):
        await deliveries.all_acked.wait()
    await source.stop(timeout_s=5)
    assert server.called == []
