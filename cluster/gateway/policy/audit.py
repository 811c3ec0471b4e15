"""The audit log: one JSON line per request, written off the event loop.

Callers hand :meth:`AuditLog.write` a small dict and return at once; one writer thread
drains a bounded queue, and only there are arguments redacted, digested and serialized
and lines appended to the file. So a flood of requests (refused ones included) costs the
event loop one queue put each, however large their arguments.

Arguments appear only redacted, beside an HMAC-SHA256 of their canonical JSON under a
per-deployment key: equal arguments have equal digests, but without the key nobody can
confirm a guessed card number or email from the log (an unkeyed hash lets anyone do that).

Nothing is lost: when the queue is full the caller writes its record itself (back
pressure instead of loss; such a line may land before older queued ones, records carry
their ``time``), and :meth:`AuditLog.close` drains the queue before it returns.
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import secrets
import threading
from collections import deque
from pathlib import Path
from typing import Any

from cluster.gateway.policy.redaction import redact

__all__ = ["ARGUMENTS", "AuditLog"]

logger = logging.getLogger(__name__)

ARGUMENTS = "arguments"  # a record's raw arguments, replaced by their redacted form


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class AuditLog:
    """Appends audit records to ``path`` (JSON lines); keeps the newest in :attr:`records`.

    Args:
        path: the file to append to; ``None`` keeps records in memory only.
        key: the HMAC key for argument digests; random per process when ``None``.
        max_pending: records queued for the writer before callers write themselves.
        keep: how many formatted records :attr:`records` holds.
    """

    def __init__(
        self,
        path: str | None,
        key: bytes | None = None,
        *,
        max_pending: int = 10_000,
        keep: int = 1_000,
    ) -> None:
        self._path = Path(path) if path else None
        self._key = key if key else secrets.token_bytes(32)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._lock = threading.Lock()  # one writer of the file (and of records) at a time
        self._closed = False
        self.records: deque[dict[str, Any]] = deque(maxlen=keep)
        self._thread = threading.Thread(target=self._drain, name="raybus-audit", daemon=True)
        self._thread.start()

    def digest(self, arguments: Any) -> str:
        """The keyed digest of ``arguments`` as it appears in records."""
        canonical = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
        return hmac.new(self._key, canonical.encode("utf-8", "surrogatepass"), "sha256").hexdigest()

    def write(self, record: dict[str, Any]) -> None:
        """Queue one record; its ``arguments`` (if any) are redacted and digested later.

        The record is owned by the log from here on.
        """
        if not self._closed:
            try:
                self._queue.put_nowait(record)
                return
            except queue.Full:
                pass  # the writer is behind: write this one here rather than drop it
        self._emit([record])

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record queued so far is written; ``False`` on timeout."""
        if self._closed:
            return True
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=timeout_s)
        except queue.Full:
            return False
        return marker.done.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> bool:
        """Write every queued record and stop the writer; later writes go straight through.

        Returns ``False`` if the writer did not finish within ``timeout_s``.
        """
        if self._closed:
            return True
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            return False
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _drain(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Take what is already waiting, so one file append serves many records.
            while len(batch) < 256:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            records = [r for r in batch if isinstance(r, dict)]
            try:
                self._emit(records)
            except Exception:  # the writer must outlive one bad record or a full disk
                logger.exception("writing %d audit records failed", len(records))
            for item in batch:
                if isinstance(item, _Flush):
                    item.done.set()
            if any(item is _STOP for item in batch):
                return

    def _emit(self, records: list[dict[str, Any]]) -> None:
        lines = []
        for record in records:
            if ARGUMENTS in record:
                arguments = record.pop(ARGUMENTS)
                record["arguments_hmac"] = self.digest(arguments)
                record[ARGUMENTS] = redact(arguments)
            lines.append(json.dumps(record, separators=(",", ":"), default=str) + "\n")
        with self._lock:
            self.records.extend(records)
            if self._path is not None and lines:
                with self._path.open("a", encoding="utf-8") as out:
                    out.write("".join(lines))
