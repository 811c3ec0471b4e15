"""The trigger loop: take a record, call the tool, write the outcome, then acknowledge.

::

    loop:    take the free slots (max_in_flight of them) -> receive as many records, at
             most -> handle each aside, give back the slots not used
    handle:  arguments = map(record)     error -> dead letter (stage mapping)
                                         None  -> skipped
             result = call(tool, args,   the record's idempotency key: a refusal that ran
                           key)          nothing (1002, 1003, 1006, 1008, not sent), or an
                                         outcome the ledger tells on asking again (1004 but
                                         its "lost", no answer in time) -> wait, call again
                                         (the slot held), up to retry.max_attempts; any other
                                         error -> dead letter (stage call); an isError result
                                         -> dead letter, or the output (tool_errors: output)
             output.write(result)        refused for good (too large) -> dead letter (stage
                                         output); failing otherwise -> tried again, forever,
                                         backing off (status shows the trigger "stalled")
             ack(record)                 only now: after the output or dead letter is written

Guarantees. A record is acknowledged (its offset committed) only once its output or its
dead letter is confirmed written, so nothing is lost: a crash before the ack delivers it
again. Each call carries the record's idempotency key (:func:`call_key`: trigger and
source identity), so a record redelivered after a crash between the call and the commit
does **not** run again: the bus's ledger answers it (the stored answer, or waits for the
run still going) for as long as it remembers the key (``idempotency.ttl_s``). Execution is
therefore once per record; the *output* is at least once: it may be written twice, both
copies carrying the same ``raybus-trigger-key`` header for consumers to drop duplicates by.
A call whose worker was lost (the ledger's "lost", 1004 ``stage: run``) is never
repeated: it is dead-lettered with its error.

Backpressure: a slot is taken before each receive and given back after the ack, so the
trigger never holds more than ``max_in_flight`` records it has not finished; a source
with no receive pending fetches nothing (Kafka pauses its partitions). ``ordered`` keeps
one record per partition in hand at a time, so outputs keep the source's order.

Pure: ports (:class:`Source`, :class:`Caller`, :class:`Sink`), an injected ``sleep`` and
clock; no broker, no Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from actors.triggers.record import TriggerRecord
from actors.triggers.stats import Stage, TriggerStats
from transports.errors import (
    BusErrorCode,
    BusTimeout,
    CallError,
    ConnectionClosed,
    FramesNotSent,
    MessageTooLarge,
)

__all__ = [
    "RETRIED_CODES",
    "Caller",
    "Mapper",
    "Sink",
    "Source",
    "SourceDelivery",
    "TriggerCore",
    "TriggerPorts",
    "TriggerRules",
    "call_key",
]

logger = logging.getLogger(__name__)

# Refusals after which the tool did not run: calling again is safe.
RETRIED_CODES = frozenset(
    {
        BusErrorCode.OVERLOADED,
        BusErrorCode.CIRCUIT_OPEN,
        BusErrorCode.SHUTTING_DOWN,
        BusErrorCode.RATE_LIMITED,
    }
)
_MAX_ERROR_BYTES = 1024  # of raybus-error-message
_RECEIVE_BACKOFF_S = 1.0
_MAX_KEY_CHARS = 200  # the bus's bound on io.raybus/idempotency-key
_RECEIVE_BATCH = 10  # records asked of the source at once at most (SQS's own limit)
# Headers a trigger sets on what it writes (a source record's own of these are replaced).
_OUR_HEADERS = frozenset(
    {
        "raybus-trigger",
        "raybus-trigger-key",
        "raybus-source",
        "raybus-error-stage",
        "raybus-error-message",
        "raybus-error-code",
        "raybus-attempts",
    }
)  # after a failed receive (broker away): pacing, not sync


class SourceDelivery(Protocol):
    record: TriggerRecord

    async def ack(self) -> None:
        """Done with the record: commit it (with everything before it)."""


class Source(Protocol):
    async def receive(self, limit: int) -> Sequence[SourceDelivery]:
        """The next records, at least one and at most ``limit`` (waits for one)."""


class Caller(Protocol):
    async def call(
        self, tool: str, arguments: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        """The tool's CallToolResult as a dict; a call with a key the bus has seen is
        answered from its ledger, never run again (README "Idempotency keys").

        Raises: CallError, BusTimeout, ConnectionClosed, FramesNotSent.
        """


class Sink(Protocol):
    async def write(
        self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Returns once the record is confirmed written.

        Raises: MessageTooLarge (never accepted); anything else is worth a retry.
        """


Mapper = Callable[[TriggerRecord], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True)
class TriggerRules:
    """What the loop needs of a trigger's configuration."""

    name: str
    tool: str
    max_in_flight: int = 16
    output_format: Literal["envelope", "result", "structured"] = "envelope"
    tool_errors: Literal["dead_letter", "output"] = "dead_letter"
    ordered: bool = False
    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0


@dataclass(frozen=True)
class TriggerPorts:
    source: Source
    caller: Caller
    mapper: Mapper
    dead_letter: Sink
    output: Sink | None = None
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic


@dataclass(frozen=True)
class _Failure:
    stage: Stage
    message: str
    code: str | None = None  # a JSON-RPC code, or "isError"
    attempts: int = 0


def _retry_after_s(exc: CallError) -> float:
    data = exc.data
    hint = data.get("retryAfterSeconds") if isinstance(data, dict) else None
    return float(hint) if isinstance(hint, int | float) and hint > 0 else 0.0


def _tool_error_text(result: dict[str, Any]) -> str:
    texts = [c.get("text", "") for c in result.get("content") or [] if isinstance(c, dict)]
    return " ".join(t for t in texts if isinstance(t, str)) or "the tool reported an error"


def _clip(text: str) -> bytes:
    return text.encode("utf-8")[:_MAX_ERROR_BYTES]


class TriggerCore:
    """One trigger replica's loop; :meth:`run` until cancelled, then :meth:`drain`."""

    def __init__(self, rules: TriggerRules, ports: TriggerPorts) -> None:
        self.rules = rules
        self._ports = ports
        self.stats = TriggerStats(ports.clock, rules.max_in_flight)
        self._slots = asyncio.Semaphore(rules.max_in_flight)
        self._handling: set[asyncio.Task[None]] = set()
        self._partition_locks: dict[tuple[str, int], asyncio.Lock] = {}

    async def run(self) -> None:
        """Take records until cancelled (a failed receive is logged and tried again)."""
        while True:
            await self._slots.acquire()
            taken = 1
            # Free slots now go to one receive: a source that fetches several per request
            # (SQS: up to 10) needs fewer round trips, and never more than the free slots.
            while taken < _RECEIVE_BATCH and not self._slots.locked():
                await self._slots.acquire()  # returns at once: a slot is free
                taken += 1
            try:
                deliveries = await self._ports.source.receive(taken)
            except asyncio.CancelledError:
                self._release(taken)
                raise
            except Exception as exc:  # noqa: BLE001 - the loop's top: a broker away must not end it
                self._release(taken)
                self.stats.last_error = f"receive: {exc}"
                logger.warning("trigger %s: receive failed: %s", self.rules.name, exc)
                await self._ports.sleep(_RECEIVE_BACKOFF_S)
                continue
            self._release(taken - len(deliveries))
            for delivery in deliveries:
                self.stats.consumed += 1
                self.stats.in_flight += 1
                task = asyncio.get_running_loop().create_task(self._handle(delivery))
                self._handling.add(task)
                task.add_done_callback(self._handling.discard)

    def _release(self, slots: int) -> None:
        for _ in range(slots):
            self._slots.release()

    async def drain(self, timeout_s: float) -> int:
        """Let records in hand finish (bounded); returns how many were left unfinished
        (not acknowledged: the source delivers them again). Call once :meth:`run` ended."""
        pending = set(self._handling)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)

    async def _handle(self, delivery: SourceDelivery) -> None:
        try:
            async with self._in_order(delivery.record):
                await self._process(delivery.record)
                await delivery.ack()
            self.stats.settled()
        except Exception as exc:  # one record's top: logged, never ends the loop
            self.stats.last_error = f"{delivery.record.position}: {exc}"
            logger.exception("trigger %s: record %s", self.rules.name, delivery.record.position)
        finally:
            self.stats.in_flight -= 1
            self._slots.release()

    @contextlib.asynccontextmanager
    async def _in_order(self, record: TriggerRecord) -> AsyncIterator[None]:
        if not self.rules.ordered:
            yield
            return
        lock = self._partition_locks.setdefault((record.topic, record.partition), asyncio.Lock())
        async with lock:
            yield

    async def _process(self, record: TriggerRecord) -> None:
        try:
            arguments = await self._ports.mapper(record)
        except Exception as exc:  # noqa: BLE001 - a user's map: callable or a missing field
            await self._dead_letter(record, _Failure(Stage.MAPPING, f"{exc}"))
            return
        if arguments is None:
            self.stats.skipped += 1
            return
        outcome = await self._call(arguments, call_key(self.rules.name, record))
        if isinstance(outcome, _Failure):
            await self._dead_letter(record, outcome)
            return
        if outcome.get("isError") and self.rules.tool_errors == "dead_letter":
            failure = _Failure(Stage.CALL, _tool_error_text(outcome), "isError", 1)
            await self._dead_letter(record, failure)
            return
        output = self._ports.output
        if output is None:
            self.stats.ok += 1
            return
        value = self._output_value(record, outcome)
        if value is None:
            message = "the result has no structuredContent (output format: structured)"
            await self._dead_letter(record, _Failure(Stage.OUTPUT, message, attempts=1))
            return
        try:
            await self._write(output, record.raw_key, value, self._headers(record), "output")
        except MessageTooLarge as exc:
            await self._dead_letter(record, _Failure(Stage.OUTPUT, str(exc), attempts=1))
            return
        self.stats.ok += 1

    async def _call(self, arguments: dict[str, Any], key: str) -> dict[str, Any] | _Failure:
        rules = self.rules
        attempt = 0
        while True:
            attempt += 1
            wait_s = 0.0
            try:
                return await self._ports.caller.call(rules.tool, arguments, key)
            except CallError as exc:
                if not _called_again(exc) or attempt >= rules.max_attempts:
                    return _Failure(Stage.CALL, exc.message, str(exc.code), attempt)
                wait_s = _retry_after_s(exc)
                error = str(exc)
            except BusTimeout as exc:  # it may still run: asked again, the ledger answers
                if attempt >= rules.max_attempts:
                    code = str(int(BusErrorCode.DEADLINE_EXCEEDED))
                    return _Failure(Stage.CALL, str(exc), code, attempt)
                error = str(exc)
            except (FramesNotSent, ConnectionClosed) as exc:  # not sent, or not taken
                if attempt >= rules.max_attempts:
                    return _Failure(Stage.CALL, f"not sent: {exc}", None, attempt)
                error = str(exc)
            self.stats.retried += 1
            backoff_s = min(rules.backoff_s * 2 ** (attempt - 1), rules.max_backoff_s)
            logger.info("trigger %s: refused (%s); again in %.1f s", rules.name, error, backoff_s)
            await self._ports.sleep(max(backoff_s, wait_s))

    def _output_value(self, record: TriggerRecord, result: dict[str, Any]) -> bytes | None:
        body: Any
        match self.rules.output_format:
            case "result":
                body = result
            case "structured":
                body = result.get("structuredContent")
                if body is None:
                    return None
            case "envelope":
                body = {
                    "trigger": self.rules.name,
                    "tool": self.rules.tool,
                    "source": record.source(),
                    "key": record.idempotency_key,
                    "result": result,
                }
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    def _headers(self, record: TriggerRecord) -> list[tuple[str, bytes]]:
        return [
            ("raybus-trigger", self.rules.name.encode("utf-8")),
            ("raybus-trigger-key", record.idempotency_key.encode("utf-8")),
            ("raybus-source", record.position.encode("utf-8")),
        ]

    async def _dead_letter(self, record: TriggerRecord, failure: _Failure) -> None:
        """The record's own value and headers, plus why it failed; written, whatever it
        takes (a dead letter is the only place a failed record goes)."""
        headers = [h for h in record.raw_headers if h[0] not in _OUR_HEADERS]
        headers += self._headers(record)
        headers += [
            ("raybus-error-stage", str(failure.stage).encode("utf-8")),
            ("raybus-error-message", _clip(failure.message)),
            ("raybus-attempts", str(failure.attempts).encode("utf-8")),
        ]
        if failure.code is not None:
            headers.append(("raybus-error-code", failure.code.encode("utf-8")))
        value = record.raw_value if record.raw_value is not None else b""
        while True:
            try:
                await self._write(self._ports.dead_letter, record.raw_key, value, headers, "dlq")
                break
            except MessageTooLarge as exc:  # unlikely (the source held it): keep it visible
                self.stats.stalled = f"dead letter of {record.position} refused: {exc}"
                logger.error("trigger %s: %s", self.rules.name, self.stats.stalled)
                await self._ports.sleep(self.rules.max_backoff_s)
        self.stats.dead_lettered[failure.stage] += 1
        self.stats.last_error = f"{record.position} ({failure.stage}): {failure.message}"[:1024]
        logger.info("trigger %s: %s dead-lettered", self.rules.name, record.position)

    async def _write(
        self,
        sink: Sink,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        what: str,
    ) -> None:
        """Write until confirmed; MessageTooLarge is raised, every other failure retried."""
        backoff_s = self.rules.backoff_s
        while True:
            try:
                await sink.write(key, value, headers)
            except MessageTooLarge:
                raise
            except Exception as exc:  # noqa: BLE001 - a broker away: retried, shown as stalled
                self.stats.stalled = f"{what} write failing: {exc}"
                logger.warning("trigger %s: %s write failed: %s", self.rules.name, what, exc)
                await self._ports.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, self.rules.max_backoff_s)
                continue
            self.stats.stalled = None
            return


def call_key(trigger: str, record: TriggerRecord) -> str:
    """The idempotency key of a record's call: the same on every redelivery of the record
    (its source identity), distinct per trigger; hashed when too long for the bus."""
    key = f"trigger:{trigger}:{record.idempotency_key}"
    if len(key) <= _MAX_KEY_CHARS and key.isascii() and key.isprintable():
        return key
    digest = hashlib.sha256(record.idempotency_key.encode("utf-8", "surrogatepass"))
    return f"trigger:{trigger}:sha256:{digest.hexdigest()}"


def _called_again(exc: CallError) -> bool:
    """A refusal that ran nothing, or an outcome the bus's ledger can tell on asking again
    with the same key ("may have run", "still running"); never the ledger's "lost"."""
    if exc.code in RETRIED_CODES:
        return True
    stage = exc.data.get("stage") if isinstance(exc.data, dict) else None
    return exc.code == BusErrorCode.OUTCOME_UNKNOWN and stage != "run"
