"""Which offsets of a partition may be committed: the longest prefix of acked records.

Pure bookkeeping, kept apart from the consumer so its rule is read (and tested) alone:
records are acked out of order, and the commit never passes one that is not acked.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, MutableMapping
from enum import Enum
from typing import TypeVar

P = TypeVar("P")  # a partition (aiokafka's TopicPartition; anything hashable in tests)

__all__ = [
    "Claim",
    "PartitionBook",
    "Settled",
    "due_commits",
    "forget_unassigned",
    "mark_committed",
]


class Settled(Enum):
    ACKED = "acked"
    NACKED = "nacked"


class Claim:
    """One delivery of one record; its ack/nack count only while it is current."""

    __slots__ = ()


class PartitionBook:
    """Delivered offsets of one assigned partition, in offset order, and what became of them.

    The commit point is one past the longest prefix of acked records: a record acked out
    of order waits for the ones before it.
    """

    def __init__(self) -> None:
        self.marks: dict[int, Claim | Settled] = {}
        self.commit_point: int | None = None  # next offset to commit, once known
        self.committed: int | None = None

    def claim(self, offset: int) -> Claim | None:
        """A new claim on ``offset``, or None when it is in flight or already acked."""
        if self.commit_point is not None and offset < self.commit_point:
            return None
        mark = self.marks.get(offset)
        if mark is not None and mark is not Settled.NACKED:
            return None
        claim = Claim()
        last = next(reversed(self.marks), None)
        self.marks[offset] = claim
        if last is not None and offset < last and mark is None:
            self.marks = dict(sorted(self.marks.items()))
        return claim

    def settle(self, offset: int, claim: Claim, outcome: Settled) -> bool:
        """Record an ack or nack; False when ``claim`` is no longer the current one."""
        if self.marks.get(offset) is not claim:
            return False
        self.marks[offset] = outcome
        while self.marks:
            first = next(iter(self.marks))
            if self.marks[first] is not Settled.ACKED:
                break
            del self.marks[first]
            self.commit_point = first + 1
        return True

    def first_nacked(self) -> int | None:
        return next((o for o, m in self.marks.items() if m is Settled.NACKED), None)


def due_commits(books: Mapping[P, PartitionBook]) -> dict[P, int]:
    """Each partition whose commit point moved past what was last committed."""
    return {
        partition: book.commit_point
        for partition, book in books.items()
        if book.commit_point is not None and book.commit_point != book.committed
    }


def mark_committed(books: Mapping[P, PartitionBook], committed: Mapping[P, int]) -> None:
    """Record a commit that succeeded (partitions revoked meanwhile are skipped)."""
    for partition, point in committed.items():
        if (book := books.get(partition)) is not None:
            book.committed = point


def forget_unassigned(books: MutableMapping[P, PartitionBook], assigned: Container[P]) -> list[P]:
    """Drop the books of partitions no longer assigned here; returns those partitions.

    Their deliveries become stale (an ack of one does nothing): the partition's new owner
    reads on from the committed offset.
    """
    gone = [partition for partition in books if partition not in assigned]
    for partition in gone:
        del books[partition]
    return gone
