import asyncio

from actors.outbox import Outbox
from tests.waiting import wait_until


class SlowReceiver:
    """Accepts a batch when released, recording batches in arrival order."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []
        self.release: dict[int, asyncio.Future[None]] = {}

    def submit(self, destination: str, items: list[int]) -> asyncio.Future[None]:
        self.batches.append((destination, items))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.release[len(self.batches)] = future
        return future


async def test_items_put_in_one_turn_leave_as_one_batch_per_destination() -> None:
    receiver = SlowReceiver()
    outbox: Outbox[str, int] = Outbox(receiver.submit)
    for i in range(5):
        outbox.put("a", i)
    outbox.put("b", 99)
    await asyncio.sleep(0)
    assert receiver.batches == [("a", [0, 1, 2, 3, 4]), ("b", [99])]


async def test_one_batch_is_in_flight_per_destination_and_order_is_kept() -> None:
    receiver = SlowReceiver()
    outbox: Outbox[str, int] = Outbox(receiver.submit)
    outbox.put("a", 1)
    await asyncio.sleep(0)
    outbox.put("a", 2)
    outbox.put("a", 3)
    await asyncio.sleep(0)
    assert receiver.batches == [("a", [1])]  # 2 and 3 wait for the first to be accepted
    receiver.release[1].set_result(None)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert receiver.batches == [("a", [1]), ("a", [2, 3])]


async def test_a_failed_batch_is_reported_and_later_batches_still_go() -> None:
    receiver = SlowReceiver()
    failures: list[tuple[str, list[int], str]] = []
    outbox: Outbox[str, int] = Outbox(
        receiver.submit, on_failure=lambda d, items, e: failures.append((d, items, str(e)))
    )
    outbox.put("a", 1)
    await asyncio.sleep(0)
    outbox.put("a", 2)
    receiver.release[1].set_exception(RuntimeError("actor died"))
    await wait_until(lambda: len(receiver.batches) == 2)
    assert failures == [("a", [1], "actor died")]
    assert receiver.batches[-1] == ("a", [2])


async def test_a_busy_destination_waits_out_the_interval_and_gets_a_fuller_batch() -> None:
    receiver = SlowReceiver()
    outbox: Outbox[str, int] = Outbox(receiver.submit, min_interval_s=0.05)
    outbox.put("a", 1)
    await asyncio.sleep(0)
    outbox.put("a", 2)
    receiver.release[1].set_result(None)
    await asyncio.sleep(0.01)
    outbox.put("a", 3)
    assert len(receiver.batches) == 1  # still inside the interval
    await wait_until(lambda: len(receiver.batches) == 2)
    assert receiver.batches[1] == ("a", [2, 3])


async def test_batches_are_capped() -> None:
    receiver = SlowReceiver()
    outbox: Outbox[str, int] = Outbox(receiver.submit, max_batch=2)
    for i in range(5):
        outbox.put("a", i)
    await asyncio.sleep(0)
    assert receiver.batches == [("a", [0, 1])]
    for n in (1, 2):
        receiver.release[n].set_result(None)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    assert [items for _, items in receiver.batches] == [[0, 1], [2, 3], [4]]


async def test_what_a_receiver_answers_a_batch_with_is_handed_on() -> None:
    answers: list[tuple[str, object]] = []

    async def answering(destination: str, items: list[int]) -> list[int]:
        return [item * 10 for item in items]

    outbox: Outbox[str, int] = Outbox(
        answering, on_answer=lambda d, answer: answers.append((d, answer))
    )
    outbox.put("a", 1)
    outbox.put("a", 2)
    await outbox.drain()
    assert answers == [("a", [10, 20])]


async def test_a_failing_answer_handler_is_not_a_failed_send() -> None:
    failures: list[list[int]] = []
    receiver = SlowReceiver()

    def broken(destination: str, answer: object) -> None:
        raise ValueError("bad answer")

    outbox: Outbox[str, int] = Outbox(
        receiver.submit, on_failure=lambda d, items, e: failures.append(items), on_answer=broken
    )
    outbox.put("a", 1)
    await asyncio.sleep(0)
    outbox.put("a", 2)
    receiver.release[1].set_result("news")  # type: ignore[arg-type]
    await wait_until(lambda: len(receiver.batches) == 2)
    assert failures == []  # the batch was accepted: its items are not reported lost


async def test_a_batch_is_settled_only_once_its_send_ended_either_way() -> None:
    receiver = SlowReceiver()
    settled: list[tuple[str, list[int]]] = []
    outbox: Outbox[str, int] = Outbox(
        receiver.submit,
        on_failure=lambda *_: None,
        on_settled=lambda d, items: settled.append((d, items)),
        min_interval_s=60.0,  # a busy destination's spacing must not delay settling
    )
    outbox.put("a", 1)
    outbox.put("b", 2)
    await asyncio.sleep(0)
    outbox.put("a", 3)
    await asyncio.sleep(0)
    assert settled == []  # sent, not yet accepted
    receiver.release[1].set_result(None)
    await wait_until(lambda: settled == [("a", [1])])
    receiver.release[2].set_exception(RuntimeError("actor died"))
    await wait_until(lambda: settled == [("a", [1]), ("b", [2])])


async def test_a_batch_whose_submit_fails_or_drops_it_is_settled_at_once() -> None:
    settled: list[list[int]] = []

    def refuse(destination: str, items: list[int]) -> None:
        if items == [1]:
            raise RuntimeError("no such actor")
        # [2]: dropped by the submitter itself (it returns no awaitable)

    outbox: Outbox[str, int] = Outbox(
        refuse, on_failure=lambda *_: None, on_settled=lambda _, items: settled.append(items)
    )
    outbox.put("a", 1)
    await asyncio.sleep(0)
    outbox.put("a", 2)
    await asyncio.sleep(0)
    assert settled == [[1], [2]]
