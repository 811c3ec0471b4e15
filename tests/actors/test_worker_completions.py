import asyncio
from dataclasses import replace

from actors.router.core import Completion
from actors.worker.completions import CompletionReports
from cluster.naming import HandleCache, actor_names
from cluster.ray_actors.worker_ports import RayWorkerPorts
from tests.waiting import wait_until
from transports.envelope import Envelope
from transports.frame import Frame
from transports.message import Response


def _completion(n: int) -> Completion:
    return Completion(("anonymous", "client", str(n)), False, 0.001)


class Sent:
    def __init__(self) -> None:
        self.batches: list[list[Completion]] = []

    def __call__(self, completions: list[Completion]) -> None:
        self.batches.append(completions)

    @property
    def keys(self) -> list[str]:
        return [c.key[2] for batch in self.batches for c in batch]


async def test_completions_ride_on_the_next_deliver_and_are_not_sent_alone() -> None:
    sent = Sent()
    reports = CompletionReports(sent, capacity=8, linger_s=0.05)
    reports.received(3)
    reports.add(_completion(1))
    reports.add(_completion(2))
    reports.received(1)
    taken = reports.take()  # the router's next deliver carries them back
    assert [c.key[2] for c in taken] == ["1", "2"]
    await asyncio.sleep(0.1)  # past the linger: the timer was cancelled with the take
    assert sent.batches == []
    assert reports.take() == []


async def test_a_completion_no_deliver_comes_for_is_sent_alone_after_the_linger() -> None:
    sent = Sent()
    reports = CompletionReports(sent, capacity=8, linger_s=0.01)
    reports.received(2)
    reports.add(_completion(1))
    reports.add(_completion(2))
    assert sent.batches == []
    await wait_until(lambda: sent.batches != [], timeout_s=10)
    assert sent.batches == [[_completion(1), _completion(2)]]  # one call for both
    assert reports.take() == []  # never handed over twice


async def test_a_worker_the_router_counts_full_reports_at_once() -> None:
    sent = Sent()
    reports = CompletionReports(sent, capacity=2, linger_s=60)
    reports.received(2)  # the router sent as many calls as the worker's capacity
    reports.add(_completion(1))  # the router waits for this slot: no deliver will come
    assert sent.keys == ["1"]
    reports.add(_completion(2))  # the router now counts one free slot: this one may wait
    assert sent.keys == ["1"]
    assert [c.key[2] for c in reports.take()] == ["2"]


async def test_every_completion_is_handed_over_exactly_once_whichever_way() -> None:
    sent = Sent()
    reports = CompletionReports(sent, capacity=4, linger_s=0.005)
    taken: list[str] = []
    for n in range(200):
        if n % 4 == 0:
            reports.received(4)
        reports.add(_completion(n))
        if n % 7 == 0:
            taken += [c.key[2] for c in reports.take()]
        if n % 11 == 0:
            await asyncio.sleep(0.006)  # some linger out
    reports.flush()  # a draining worker sends what it still holds
    assert sorted(taken + sent.keys, key=int) == [str(n) for n in range(200)]
    assert reports.held == 0


async def test_a_delivers_answer_waits_briefly_for_the_first_completion() -> None:
    sent = Sent()
    reports = CompletionReports(sent, capacity=1, linger_s=60)
    reports.received(1)  # the router counts the worker full from now on
    answer = asyncio.ensure_future(reports.answer(hold_s=30))
    await asyncio.sleep(0)
    reports.add(_completion(1))  # the waiting answer takes it: no call of its own
    assert [c.key[2] for c in await answer] == ["1"]
    assert sent.batches == []


async def test_a_delivers_answer_comes_back_empty_when_nothing_ends() -> None:
    reports = CompletionReports(Sent(), capacity=4, linger_s=60)
    reports.received(1)
    async with asyncio.timeout(10):
        assert await reports.answer(hold_s=0.01) == []


async def test_a_verdict_on_the_pool_is_sent_at_once() -> None:
    sent = Sent()
    reports = CompletionReports(sent, capacity=8, slow_call_s=0.5, linger_s=60)
    reports.received(4)
    reports.add(Completion(("anonymous", "client", "fault"), True, 0.01))
    reports.add(Completion(("anonymous", "client", "slow"), False, 0.6))
    reports.add(Completion(("anonymous", "client", "gave-up"), False, 0.6, abandoned=True))
    reports.add(_completion(1))
    assert sent.keys == ["fault", "slow"]  # the breaker's news; the rest may wait


async def test_while_the_router_asks_for_prompt_news_nothing_is_held() -> None:
    sent = Sent()
    reports = CompletionReports(sent, capacity=8, linger_s=60)
    reports.received(1, prompt=True)  # e.g. a half-open breaker's probe
    reports.add(_completion(1))
    assert sent.keys == ["1"]
    reports.received(1)  # the breaker closed: held again
    reports.add(_completion(2))
    assert sent.keys == ["1"]


class _SlowEndpoint:
    """A caller's endpoint whose ``deliver`` is accepted only when the test says so."""

    def __init__(self) -> None:
        self.accepted: asyncio.Future[None] | None = None
        self.deliver = self

    def remote(self, frames: list[Frame]) -> asyncio.Future[None]:
        self.accepted = asyncio.get_running_loop().create_future()
        return self.accepted


async def test_a_worker_reports_a_call_done_only_once_its_answer_reached_the_caller() -> None:
    # Told earlier, a router whose worker dies before the answer leaves would neither
    # re-run nor fail the call: its caller would wait out the deadline (seen in CI).
    handles = HandleCache()
    endpoint = _SlowEndpoint()
    handles.put("raybus/t/client/1", endpoint)
    ports = RayWorkerPorts(
        "t", "raybus/t/worker/p/1", handles, pool="p", capacity=8, slow_call_s=60.0
    )
    envelope = Envelope(client_id="c", request_id="1", reply_to="raybus/t/client/1")
    answer = Frame.of(envelope, Response.success(1, {}))
    ports.reply("raybus/t/client/1", answer, _completion(1))
    await wait_until(lambda: endpoint.accepted is not None)
    assert await ports.reports.answer(hold_s=0.01) == []  # the router's deliver gets nothing
    assert endpoint.accepted is not None
    endpoint.accepted.set_result(None)
    await wait_until(lambda: ports.reports.held == 1)
    assert [c.key for c in ports.reports.take()] == [_completion(1).key]


class _Router:
    """The router's ``direct_ended``: each report waits for the test's answer."""

    def __init__(self) -> None:
        self.answers: list[asyncio.Future[str]] = []
        self.direct_ended = self

    def remote(self, worker: str, report: object) -> asyncio.Future[str]:
        self.answers.append(asyncio.get_running_loop().create_future())
        return self.answers[-1]


def _direct_call(ports: RayWorkerPorts, n: int) -> tuple[Frame, Completion]:
    envelope = Envelope(client_id="c", request_id=str(n), reply_to="raybus/t/client/1")
    frame = Frame.of(envelope, Response.success(n, {}))
    ports.direct.begin([frame])
    return frame, Completion(envelope.correlation_key, False, 0.001)


async def test_a_verdict_closes_the_direct_lane_until_the_router_answers_a_report_of_it() -> None:
    # Else a direct call could reach the worker after its caller saw the breaker open
    # (the router had the verdict) but before the router's answer reached the worker:
    # it ran, in a loaded test run ("the rejected calls never ran").
    handles, router = HandleCache(), _Router()
    handles.put(actor_names.router("t"), router)
    ports = RayWorkerPorts(
        "t", "raybus/t/worker/p/1", handles, pool="p", capacity=8, slow_call_s=60.0
    )
    quick, quick_end = _direct_call(ports, 1)
    ports.reply("raybus/t/client/1", quick, quick_end)  # no verdict: its report goes out
    await wait_until(lambda: len(router.answers) == 1)
    failed, failed_end = _direct_call(ports, 2)
    ports.reply("raybus/t/client/1", failed, replace(failed_end, failed=True))
    assert not ports.direct_open  # at once, before any report of it left
    router.answers[0].set_result("closed")  # about the report without the verdict
    await wait_until(lambda: len(router.answers) == 2)
    assert not ports.direct_open
    router.answers[1].set_result("closed")  # the router heard the verdict, still closed
    await wait_until(lambda: ports.direct_open)
    slow, slow_end = _direct_call(ports, 3)
    ports.reply("raybus/t/client/1", slow, replace(slow_end, duration_s=61.0))
    assert not ports.direct_open
    await wait_until(lambda: len(router.answers) == 3)
    router.answers[2].set_result("open")
    await asyncio.sleep(0)
    assert not ports.direct_open
