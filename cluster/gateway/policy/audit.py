"""The audit log: one JSON line per request, written off the event loop.

Callers hand :meth:`AuditLog.write` a small dict and return at once; one writer thread
drains a bounded buffer, and only there are arguments redacted, digested and serialized
and lines appended to the file. So a flood of requests (refused ones included) costs the
event loop one deque append each, however large their arguments. The writer wakes every
``interval_s`` (or at once when the buffer fills up): waking it per record, as a queue's
``put`` does, handed the GIL back and forth on every request and cost the gateway ~7 %
of its CPU under load.

Arguments appear only redacted, beside an HMAC-SHA256 of their canonical JSON under a
per-deployment key: equal arguments have equal digests, but without the key nobody can
confirm a guessed card number or email from the log (an unkeyed hash lets anyone do that).

Nothing is lost: when the buffer is full the caller writes its record itself (back
pressure instead of loss; such a line may land before older queued ones, records carry
their ``time``), and :meth:`AuditLog.close` drains the buffer before it returns.
"""

from __future__ import annotations

import hmac
import json
import logging
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
_WAKE_AT = 256  # queued records that wake the writer before its interval ends


class AuditLog:
    """Appends audit records to ``path`` (JSON lines); keeps the newest in :attr:`records`.

    Args:
        path: the file to append to; ``None`` keeps records in memory only.
        key: the HMAC key for argument digests; random per process when ``None``.
        max_pending: records queued for the writer before callers write themselves.
        keep: how many formatted records :attr:`records` holds.
        interval_s: how often the writer looks for queued records.
    """

    def __init__(
        self,
        path: str | None,
        key: bytes | None = None,
        *,
        max_pending: int = 10_000,
        keep: int = 1_000,
        interval_s: float = 0.05,
    ) -> None:
        self._path = Path(path) if path else None
        self._key = key if key else secrets.token_bytes(32)
        self._pending: deque[Any] = deque()  # append and popleft are atomic
        self._max_pending = max_pending
        self._interval_s = interval_s
        self._wake = threading.Event()
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
        if not self._closed and len(self._pending) < self._max_pending:
            self._pending.append(record)
            if len(self._pending) >= _WAKE_AT:
                self._wake.set()
            return
        self._emit([record])  # closed, or the writer is behind: written here, not dropped

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every record queued so far is written; ``False`` on timeout."""
        if self._closed:
            return True
        marker = _Flush()
        self._pending.append(marker)
        self._wake.set()
        return marker.done.wait(timeout_s)

    def close(self, timeout_s: float = 10.0) -> bool:
        """Write every queued record and stop the writer; later writes go straight through.

        Returns ``False`` if the writer did not finish within ``timeout_s``.
        """
        if self._closed:
            return True
        self._closed = True
        self._pending.append(_STOP)
        self._wake.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            return False
        # A write racing close() may have landed after the stop marker: written here.
        late = [self._pending.popleft() for _ in range(len(self._pending))]
        self._emit([r for r in late if isinstance(r, dict)])
        return True

    def _drain(self) -> None:
        while True:
            self._wake.wait(self._interval_s)  # the polling period, or woken early
            self._wake.clear()
            # Everything waiting now: one file append serves many records.
            batch = [self._pending.popleft() for _ in range(len(self._pending))]
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
