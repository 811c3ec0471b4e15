"""The task store's change feed (actors.tasks.feed), through the real store core."""

from __future__ import annotations

import asyncio

from actors.tasks.feed import ChangeFeed, FeedCursor
from actors.tasks.journal import MemoryJournal
from actors.tasks.model import TaskStatus
from actors.tasks.spec import TaskSettings
from actors.tasks.store import TaskStoreCore
from tests.actors.test_task_store import OK, make_store, progress, reply, spec


async def test_a_new_reader_starts_at_the_end_and_then_reads_each_status_change() -> None:
    store = make_store()
    before = await store.core.create(spec())
    await store.core.on_frame(reply(store.ports.submitted[-1], result=OK))
    start = await store.core.feed.changes(None, timeout_s=0)
    assert start.records == ()  # what happened before the reader came is not replayed
    task = await store.core.create(spec())
    # Progress is fed too (a 2025 creator's progressToken), but the feed keeps each
    # task's latest change: the cancel below replaces it.
    await store.core.on_frame(progress(store.ports.submitted[-1], 1, 3))
    await store.core.cancel(task.task_id, "alice")
    batch = await store.core.feed.changes(start.cursor, timeout_s=0)
    assert [(r.task_id, r.status) for r in batch.records] == [(task.task_id, TaskStatus.CANCELLED)]
    assert before.task_id not in {r.task_id for r in batch.records}
    assert (await store.core.feed.changes(batch.cursor, timeout_s=0)).records == ()


async def test_progress_alone_is_fed_with_its_values_and_a_repeat_is_not() -> None:
    store = make_store()
    task = await store.core.create(spec())
    start = await store.core.feed.changes(None, timeout_s=0)
    call = store.ports.submitted[-1]
    await store.core.on_frame(progress(call, 1, 3))
    batch = await store.core.feed.changes(start.cursor, timeout_s=0)
    [fed] = batch.records
    assert (fed.task_id, fed.status, fed.progress, fed.total) == (
        task.task_id,
        TaskStatus.WORKING,
        1,
        3,
    )
    await store.core.on_frame(progress(call, 1, 3))  # nothing new
    assert (await store.core.feed.changes(batch.cursor, timeout_s=0)).records == ()


async def test_a_long_poll_wakes_at_the_change_and_ends_empty_at_its_timeout() -> None:
    store = make_store()
    start = await store.core.feed.changes(None, timeout_s=0)
    empty = await store.core.feed.changes(start.cursor, timeout_s=0.01)
    assert (empty.records, empty.cursor) == ((), start.cursor)
    task = await store.core.create(spec())
    polling = asyncio.create_task(store.core.feed.changes(start.cursor, timeout_s=60))
    await asyncio.sleep(0)  # the poll waits now
    assert not polling.done()
    await store.core.on_frame(reply(store.ports.submitted[-1], result=OK))
    async with asyncio.timeout(30):
        woken = await polling
    [done] = woken.records
    assert (done.task_id, done.status) == (task.task_id, TaskStatus.COMPLETED)


async def test_feed_records_carry_no_arguments_result_body_or_worker_routes() -> None:
    store = make_store()
    start = await store.core.feed.changes(None, timeout_s=0)
    task = await store.core.create(spec(arguments={"secret": "x"}))
    failed = {**OK, "isError": True}
    await store.core.on_frame(reply(store.ports.submitted[-1], result=failed))
    [record] = (await store.core.feed.changes(start.cursor, timeout_s=0)).records
    assert record.task_id == task.task_id
    assert record.arguments == {}
    assert record.outcome == {"result": {"isError": True}}
    assert record.input_routes == {}


async def test_a_restarted_store_feeds_every_task_it_loaded_to_a_reader_of_the_old_one() -> None:
    journal = MemoryJournal()
    store = make_store(journal)
    start = await store.core.feed.changes(None, timeout_s=0)
    task = await store.core.create(spec())
    await store.core.on_frame(reply(store.ports.submitted[-1], result=OK))
    reborn = TaskStoreCore(store.ports, journal, TaskSettings(), clock=store.clock)
    assert await reborn.load() == 1
    assert reborn.feed.epoch != store.core.feed.epoch
    batch = await reborn.feed.changes(start.cursor, timeout_s=0)
    assert [(r.task_id, r.status) for r in batch.records] == [(task.task_id, TaskStatus.COMPLETED)]
    assert batch.cursor.epoch == reborn.feed.epoch


async def test_a_feed_keeps_the_latest_change_of_each_task_and_forgets_the_oldest_tasks() -> None:
    store = make_store()
    feed = ChangeFeed(max_kept=2)
    records = [await store.core.create(spec()) for _ in range(3)]
    for record in records:
        feed.note(None, record)
    feed.note(None, records[2])  # again: still one entry
    batch = await feed.changes(FeedCursor(feed.epoch, 0), timeout_s=0)
    assert [r.task_id for r in batch.records] == [records[1].task_id, records[2].task_id]
