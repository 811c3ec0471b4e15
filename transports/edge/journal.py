"""The edge client's durable request journal: one SQLite file (WAL, ``synchronous=FULL``).

A request is a row. Its life, each arrow one committed transaction::

    queued --mark_sending--> sending --mark_answered--> answered --claim--> (pruned later)
      |                        |--certainly not sent (never maybe-sent before)--> queued
      |                        |--maybe sent / transient answer--> stays sending (resent,
      |                        |                                   same idempotency key)
      |                        +--past the resend horizon--> failed 1004
      +--expires_at passed--> failed 1001;   queued --cancel--> cancelled

``mark_sending`` commits *before* the request leaves the process, so after a crash a row
that may have reached the bus is ``sending`` and is resent with the same key (the bus
runs a key once), never sent as new. A row once maybe-sent never returns to ``queued``.

``enqueue`` is group-committed: every submit made in one event-loop turn shares one
transaction (one fsync for hundreds of rows), and a crash inside it leaves all or none.
A journal holding ``max_rows`` unanswered rows refuses new ones with :class:`JournalFull`
(the producer's backpressure): nothing is ever dropped.

Failure modes: a file written by a newer schema (``user_version``) is refused with
:class:`JournalError`; a file whose last close was not clean gets ``PRAGMA quick_check``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Self

import aiosqlite

from transports.errors import BusError, BusErrorCode

__all__ = [
    "EXPIRED_MESSAGE",
    "HORIZON_MESSAGE",
    "Journal",
    "JournalError",
    "JournalFull",
    "Row",
    "RowState",
    "Submission",
]

SCHEMA_VERSION: Final = 1
EXPIRED_MESSAGE: Final = "expired in the journal before it was sent"
HORIZON_MESSAGE: Final = (
    "may have run; the bus no longer remembers its key, so it is not sent again"
)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
  seq             INTEGER PRIMARY KEY AUTOINCREMENT,
  request_id      TEXT    NOT NULL UNIQUE,
  idempotency_key TEXT    NOT NULL UNIQUE,
  method          TEXT    NOT NULL,
  name            TEXT,
  params          BLOB    NOT NULL,
  labels          TEXT    NOT NULL DEFAULT '{}',
  state           TEXT    NOT NULL CHECK (state IN
                    ('queued','sending','answered','failed','cancelled')),
  attempts        INTEGER NOT NULL DEFAULT 0,
  created_at      REAL    NOT NULL,
  expires_at      REAL,
  first_sent_at   REAL,
  last_attempt_at REAL,
  response        BLOB,
  error_code      INTEGER,
  error_message   TEXT,
  answered_at     REAL,
  claimed         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS requests_to_send ON requests (seq)
  WHERE state IN ('queued', 'sending');
CREATE INDEX IF NOT EXISTS requests_unclaimed ON requests (seq)
  WHERE state IN ('answered', 'failed') AND claimed = 0;
"""
_COLUMNS: Final = (
    "seq, request_id, idempotency_key, method, name, params, labels, state, attempts,"
    " created_at, expires_at, first_sent_at, response, error_code, error_message, claimed"
)


class RowState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    ANSWERED = "answered"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (RowState.ANSWERED, RowState.FAILED, RowState.CANCELLED)


class JournalError(BusError):
    """The journal file cannot be used (newer schema, corrupt)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"edge journal {self.path}: {self.reason}"


class JournalFull(BusError):
    """``max_rows`` requests are unanswered: the submit is refused, nothing is dropped."""

    retriable = True

    def __init__(self, max_rows: int) -> None:
        super().__init__(max_rows)
        self.max_rows = max_rows

    def __str__(self) -> str:
        return f"edge journal full: {self.max_rows} requests are waiting to be answered"


@dataclass(frozen=True)
class Submission:
    """What ``enqueue`` stores: a ``tools/call`` (params without per-attempt ``_meta``)."""

    name: str
    arguments: Mapping[str, Any]
    labels: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None  # default: the request id
    expires_at: float | None = None


@dataclass(frozen=True)
class Row:
    """One journaled request as last committed."""

    seq: int
    request_id: str
    idempotency_key: str
    method: str
    name: str | None
    params: dict[str, Any]
    labels: dict[str, str]
    state: RowState
    attempts: int
    created_at: float
    expires_at: float | None
    first_sent_at: float | None
    response: dict[str, Any] | None
    error_code: int | None
    error_message: str | None
    claimed: bool

    @classmethod
    def _of(cls, values: tuple[Any, ...]) -> Row:
        (seq, rid, key, method, name, params, labels, state, attempts, created) = values[:10]
        expires, first_sent, response, code, message, claimed = values[10:]
        return cls(
            seq=seq,
            request_id=rid,
            idempotency_key=key,
            method=method,
            name=name,
            params=json.loads(params),
            labels=json.loads(labels),
            state=RowState(state),
            attempts=attempts,
            created_at=created,
            expires_at=expires,
            first_sent_at=first_sent,
            response=None if response is None else json.loads(response),
            error_code=code,
            error_message=message,
            claimed=bool(claimed),
        )


@dataclass
class _Pending:
    row: tuple[Any, ...]
    done: asyncio.Future[None]


class Journal:
    """The request journal over one ``aiosqlite`` connection; module docstring.

    Use :meth:`open`; every method is a coroutine on the opening loop.
    """

    def __init__(
        self, db: aiosqlite.Connection, path: str, max_rows: int, clock: Callable[[], float]
    ) -> None:
        self._db = db
        self._path = path
        self._max_rows = max_rows
        self._clock = clock
        self._client_id = ""
        self._unanswered = 0
        self._pending: list[_Pending] = []
        # Keys chosen by callers whose rows are not committed yet (duplicates refused).
        self._keys_uncommitted: set[str] = set()
        self._flush: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one transaction at a time on the connection

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        max_rows: int = 1_000_000,
        clock: Callable[[], float] = time.time,
    ) -> Self:
        """Open (create on first use) the journal at ``path`` and recover it.

        Raises:
            JournalError: the file holds a newer schema or fails its integrity check.
        """
        db = await aiosqlite.connect(str(path), isolation_level=None)
        journal = cls(db, str(path), max_rows, clock)
        try:
            await journal._prepare()
        except BaseException:
            await db.close()
            raise
        return journal

    async def _prepare(self) -> None:
        db = self._db
        await db.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed row survives power loss (NORMAL may lose the last commits).
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute("PRAGMA foreign_keys = ON")
        version = await self._scalar("PRAGMA user_version")
        if version > SCHEMA_VERSION:
            raise JournalError(
                self._path, f"schema version {version} is newer than {SCHEMA_VERSION}"
            )
        await db.executescript(_SCHEMA)
        await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        clean = await self._meta("clean_close")
        if version and clean is None:
            verdict = await self._scalar_text("PRAGMA quick_check")
            if verdict != "ok":
                raise JournalError(self._path, f"integrity check failed: {verdict}")
        client_id = await self._meta("client_id")
        async with self._transaction():
            if client_id is None:
                client_id = secrets.token_hex(16)  # 128 bits: one client across restarts
                await self._put_meta("client_id", client_id)
                await self._put_meta("created_at", repr(self._clock()))
            await db.execute("DELETE FROM meta WHERE key = 'clean_close'")
        self._client_id = client_id
        self._unanswered = await self._scalar(
            "SELECT count(*) FROM requests WHERE state IN ('queued', 'sending')"
        )

    @property
    def client_id(self) -> str:
        """128 random bits (hex), made once per journal file."""
        return self._client_id

    def now(self) -> float:
        """The journal's clock (unix seconds)."""
        return self._clock()

    @property
    def unanswered(self) -> int:
        """Rows ``queued`` or ``sending`` (committed or being committed)."""
        return self._unanswered

    # -- enqueue (group commit) ------------------------------------------------------

    async def enqueue(self, submission: Submission) -> str:
        """Journal one request; returns its request id once the row is committed.

        Raises:
            JournalFull: ``max_rows`` requests are unanswered.
        """
        if self._unanswered >= self._max_rows:
            raise JournalFull(self._max_rows)
        key = submission.idempotency_key
        if key is not None:
            taken = await self._key_taken(key)
            # Checked again after the await: a concurrent submit may have taken it.
            if taken or key in self._keys_uncommitted:
                raise ValueError(f"idempotency_key: {key!r} was already used in this journal")
            self._keys_uncommitted.add(key)
        request_id = secrets.token_hex(16)
        params = {"name": submission.name, "arguments": dict(submission.arguments)}
        row = (
            request_id,
            submission.idempotency_key or request_id,
            "tools/call",
            submission.name,
            json.dumps(params, separators=(",", ":")),
            json.dumps(dict(submission.labels), separators=(",", ":")),
            self._clock(),
            submission.expires_at,
        )
        pending = _Pending(row, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        self._unanswered += 1
        if self._flush is None:
            # Everything submitted before this task runs joins the same transaction.
            self._flush = asyncio.create_task(self._commit_pending())
        await asyncio.shield(pending.done)
        return request_id

    async def _commit_pending(self) -> None:
        await asyncio.sleep(0)  # let the rest of this loop turn's submits join
        async with self._lock:
            batch, self._pending, self._flush = self._pending, [], None
            try:
                await _to_the_end(self._db.execute("BEGIN IMMEDIATE"))
                await self._db.executemany(
                    "INSERT INTO requests (request_id, idempotency_key, method, name, params,"
                    " labels, created_at, expires_at, state) VALUES (?,?,?,?,?,?,?,?,'queued')",
                    [p.row for p in batch],
                )
                await _to_the_end(self._db.commit())
            except BaseException as exc:
                await self._rollback()
                self._unanswered -= len(batch)
                self._keys_uncommitted.difference_update(p.row[1] for p in batch)
                for p in batch:
                    if not p.done.done():
                        p.done.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
        self._keys_uncommitted.difference_update(p.row[1] for p in batch)
        for p in batch:
            if not p.done.done():
                p.done.set_result(None)

    # -- transitions -----------------------------------------------------------------

    async def mark_sending(self, request_id: str) -> Row | None:
        """``queued``/``sending`` -> ``sending``, committed; the row, or None when it is
        no longer sendable (answered, failed, cancelled meanwhile)."""
        now = self._clock()
        async with self._transaction():
            cursor = await self._db.execute(
                "UPDATE requests SET state = 'sending', attempts = attempts + 1,"
                " last_attempt_at = ?, first_sent_at = coalesce(first_sent_at, ?)"
                " WHERE request_id = ? AND state IN ('queued', 'sending')",
                (now, now, request_id),
            )
            changed = cursor.rowcount
        return await self.get(request_id) if changed else None

    async def mark_not_sent(self, request_id: str, *, was_queued: bool) -> None:
        """The attempt certainly did not leave: back to ``queued`` when no earlier attempt
        may have (``was_queued``); a row once maybe-sent stays ``sending``."""
        if not was_queued:
            return
        async with self._transaction():
            await self._db.execute(
                "UPDATE requests SET state = 'queued', first_sent_at = NULL"
                " WHERE request_id = ? AND state = 'sending'",
                (request_id,),
            )

    async def mark_answered(self, request_id: str, response: Mapping[str, Any]) -> bool:
        """Store the JSON-RPC response (final). False when the row was already final."""
        body = json.dumps(dict(response), separators=(",", ":"))
        return await self._finish(
            "UPDATE requests SET state = 'answered', response = ?, answered_at = ?"
            " WHERE request_id = ? AND state IN ('queued', 'sending')",
            (body, self._clock(), request_id),
        )

    async def mark_failed(self, request_id: str, code: int, message: str) -> bool:
        """A local, final failure (``code``, ``message``). False when already final."""
        return await self._finish(
            "UPDATE requests SET state = 'failed', error_code = ?, error_message = ?,"
            " answered_at = ? WHERE request_id = ? AND state IN ('queued', 'sending')",
            (code, message, self._clock(), request_id),
        )

    async def cancel(self, request_id: str) -> bool:
        """``queued`` -> ``cancelled``; False for a row that may have left (or is final)."""
        return await self._finish(
            "UPDATE requests SET state = 'cancelled', answered_at = ?, claimed = 1"
            " WHERE request_id = ? AND state = 'queued'",
            (self._clock(), request_id),
        )

    async def claim(self, request_id: str) -> None:
        """The caller took the outcome: the row may be pruned after ``keep_s``."""
        async with self._transaction():
            await self._db.execute(
                "UPDATE requests SET claimed = 1 WHERE request_id = ?"
                " AND state IN ('answered', 'failed', 'cancelled')",
                (request_id,),
            )

    async def expire(self, horizon_s: float) -> list[str]:
        """Fail what may no longer be sent; the request ids failed now.

        ``queued`` rows past ``expires_at`` fail with 1001; ``sending`` rows first sent
        more than ``horizon_s`` ago fail with 1004 (the bus may have forgotten the key, so
        a resend could run the call twice: at-most-once wins).
        """
        now = self._clock()
        async with self._transaction():
            rows = await self._fetch(
                "SELECT request_id, state FROM requests WHERE (state = 'queued' AND"
                " expires_at IS NOT NULL AND expires_at <= ?) OR (state = 'sending' AND"
                " first_sent_at IS NOT NULL AND first_sent_at < ?)",
                (now, now - horizon_s),
            )
            for request_id, state in rows:
                expired = state == RowState.QUEUED
                code = BusErrorCode.DEADLINE_EXCEEDED if expired else BusErrorCode.OUTCOME_UNKNOWN
                await self._db.execute(
                    "UPDATE requests SET state = 'failed', error_code = ?, error_message = ?,"
                    " answered_at = ? WHERE request_id = ?",
                    (int(code), EXPIRED_MESSAGE if expired else HORIZON_MESSAGE, now, request_id),
                )
        self._unanswered -= len(rows)
        return [request_id for request_id, _ in rows]

    async def prune(self, keep_s: float) -> int:
        """Delete claimed final rows older than ``keep_s``; how many."""
        async with self._transaction():
            cursor = await self._db.execute(
                "DELETE FROM requests WHERE claimed = 1 AND answered_at < ?",
                (self._clock() - keep_s,),
            )
            return cursor.rowcount

    # -- reads -----------------------------------------------------------------------

    async def get(self, request_id: str) -> Row | None:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM requests WHERE request_id = ?", (request_id,)
        )
        return Row._of(tuple(rows[0])) if rows else None

    async def to_send(self, after_seq: int, limit: int) -> list[Row]:
        """Rows ``queued`` or ``sending`` with ``seq > after_seq``, in ``seq`` order."""
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM requests WHERE state IN ('queued', 'sending')"
            " AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [Row._of(tuple(r)) for r in rows]

    async def unclaimed(self, after_seq: int, limit: int) -> list[Row]:
        """Final rows (answered, failed) nobody claimed, ``seq > after_seq``, in order."""
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM requests WHERE state IN ('answered', 'failed')"
            " AND claimed = 0 AND seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [Row._of(tuple(r)) for r in rows]

    async def _key_taken(self, key: str) -> bool:
        rows = await self._fetch("SELECT 1 FROM requests WHERE idempotency_key = ?", (key,))
        return bool(rows)

    async def count(self, state: RowState) -> int:
        return await self._scalar("SELECT count(*) FROM requests WHERE state = ?", (state,))

    async def meta(self, key: str) -> str | None:
        return await self._meta(key)

    async def set_meta(self, key: str, value: str) -> None:
        async with self._transaction():
            await self._put_meta(key, value)

    async def close(self) -> None:
        """Commit what is pending, mark the close clean, close the file."""
        if self._flush is not None:
            await asyncio.gather(self._flush, return_exceptions=True)
        await self.set_meta("clean_close", repr(self._clock()))
        await self._db.close()

    # -- helpers ---------------------------------------------------------------------

    async def _finish(self, sql: str, args: tuple[Any, ...]) -> bool:
        async with self._transaction():
            cursor = await self._db.execute(sql, args)
            changed = cursor.rowcount > 0
        if changed:
            self._unanswered -= 1
        return changed

    def _transaction(self) -> _Transaction:
        return _Transaction(self)

    async def _rollback(self) -> None:
        if self._db.in_transaction:
            await _to_the_end(self._db.rollback())

    async def _fetch(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await self._db.execute_fetchall(sql, args)]

    async def _meta(self, key: str) -> str | None:
        rows = await self._fetch("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def _put_meta(self, key: str, value: str) -> None:
        await self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def _scalar(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        rows = await self._fetch(sql, args)
        return int(rows[0][0])

    async def _scalar_text(self, sql: str) -> str:
        rows = await self._fetch(sql)
        return str(rows[0][0])


class _Transaction:
    """``BEGIN IMMEDIATE`` .. ``COMMIT`` under the journal's lock; rolled back on error."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal

    async def __aenter__(self) -> None:
        await self._journal._lock.acquire()
        try:
            await _to_the_end(self._journal._db.execute("BEGIN IMMEDIATE"))
        except BaseException:
            try:
                await self._journal._rollback()  # a BEGIN that ran must not outlive us
            finally:
                self._journal._lock.release()
            raise

    async def __aexit__(self, kind: object, exc: object, tb: object) -> None:
        try:
            if exc is None:
                await _to_the_end(self._journal._db.commit())
            else:
                await self._journal._rollback()
        finally:
            self._journal._lock.release()


async def _to_the_end(statement: Awaitable[Any]) -> Any:
    """Await ``statement`` and, if this task is cancelled meanwhile, still wait for it
    before the cancellation goes on. aiosqlite runs every statement on its own thread,
    where a cancelled await does not stop it: a BEGIN that ran after its caller gave up
    left the connection inside a transaction nobody would end, and every later BEGIN
    failed ("cannot start a transaction within a transaction")."""
    running = asyncio.ensure_future(statement)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait([running])
        raise
