"""The commit rule of a Kafka consumer's partitions: only past the longest acked prefix."""

from __future__ import annotations

from transports.kafka.offsets import (
    PartitionBook,
    Settled,
    due_commits,
    forget_unassigned,
    mark_committed,
)


def acked(book: PartitionBook, *offsets: int) -> None:
    for offset in offsets:
        claim = book.claim(offset)
        assert claim is not None
        assert book.settle(offset, claim, Settled.ACKED)


def test_a_commit_is_due_only_past_the_acked_prefix_and_once() -> None:
    first, second = PartitionBook(), PartitionBook()
    acked(first, 0, 1)
    claim = second.claim(0)  # in hand: nothing of the second partition may be committed
    assert claim is not None
    acked(second, 1)
    books = {"p0": first, "p1": second}
    assert due_commits(books) == {"p0": 2}
    mark_committed({"p0": first}, {"p0": 2, "revoked": 9})  # a revoked partition is skipped
    assert due_commits(books) == {}
    assert second.settle(0, claim, Settled.ACKED)
    assert due_commits(books) == {"p1": 2}


def test_only_the_books_of_partitions_still_assigned_are_kept_for_the_commit() -> None:
    mine, moved = PartitionBook(), PartitionBook()
    acked(mine, 0)
    acked(moved, 0, 1)
    books = {"p0": mine, "p1": moved}
    assert forget_unassigned(books, {"p0", "p2"}) == ["p1"]
    assert due_commits(books) == {"p0": 1}  # nothing of the moved partition is committed
    assert forget_unassigned(books, {"p0"}) == []
