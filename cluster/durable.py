"""Answers that outlive their caller: durable clients on Kafka and SQS (issue 21, 6).

::

    client = await BusClient.connect("jobs", durable_id="risk-job-7")
    ids = [await client.send_tool("score", {"row": i}, timeout_s=3600) for i in range(100)]
    await client.close()            # the calls run on; their answers wait in the broker
    ...                             # later, maybe from another process
    client = await BusClient.connect("jobs", durable_id="risk-job-7")
    async for answer in client.answers():
        print(answer.request_id, answer.tool_result())

A durable client keeps its id across connections, and with it its reply topic (Kafka,
read in a consumer group of its own) or queue (SQS, not deleted on close): answers
produced while no connection reads wait there for ``kafka.response_retention_s`` /
``sqs.response_retention_s``. Closing it cancels no call.

Its request ids are ``<incarnation>.<n>``, the incarnation 8 random hex digits per
connection: the pool-wide idempotency ledger knows calls by client and request id, so a
reused id would be answered with an earlier connection's stored answer.

An answer that no caller of this connection awaits (made by an earlier connection, sent
by :meth:`DurableCalls.send_tool`, or whose caller timed out) waits in a bounded buffer
until :meth:`DurableCalls.answers` takes it. It is acknowledged to the broker (Kafka
offset committed, SQS message deleted) once in that buffer, so an answer buffered but
not taken when the process dies is lost. A full buffer holds the broker's deliveries
back (nothing is lost; live calls' answers wait behind it too). A per-connection set of
the answers seen drops the broker's redeliveries: each answer comes at most once per
connection. One connection per durable id at a time: two would share its answers (SQS)
or wait for each other's partition (Kafka). After a process died without closing, Kafka
hands the next connection its answers once the group dropped the dead member (its
session timeout).

Ray has no broker between caller and worker: there, ``start_tool`` (a task) is the way
to a result that outlives its caller.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mcp_types as types

from actors.tracing import current_trace_context
from cluster.naming import actor_names
from transports.envelope import CorrelationKey, Envelope
from transports.errors import INTERNAL_ERROR, CallError
from transports.frame import Frame
from transports.message import Request, Response

if TYPE_CHECKING:
    from cluster.client_connection import ClientConnection

__all__ = [
    "DEFAULT_BUFFERED_ANSWERS",
    "DURABLE_PREFIX",
    "Answer",
    "AnswerBuffer",
    "DurableCalls",
    "client_name",
    "new_incarnation",
]

# Begins every durable client's id: no other client's id (random hex, or the task
# store's "tasks") does, so no durable id can name another client's reply address.
DURABLE_PREFIX = "durable."

# Answers held for answers() at most; beyond, the broker holds them (unacknowledged).
DEFAULT_BUFFERED_ANSWERS = 1000

# It names the client's reply topic or queue and consumer group: safe in each.
_DURABLE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def client_name(bus: str, durable_id: str | None, inbox: str | None) -> str:
    """The client's name: the actor it runs in, its durable id, or a fresh random one.

    Raises:
        ValueError: ``durable_id`` is not 1-64 of ``A-Z a-z 0-9 . _ -``, or comes with
            ``inbox``.
    """
    if durable_id is None:
        return inbox or actor_names.client(bus)
    if not isinstance(durable_id, str) or _DURABLE_ID.fullmatch(durable_id) is None:
        raise ValueError(
            f"durable_id {durable_id!r:.80}: use 1 to 64 characters of A-Z a-z 0-9 . _ - "
            "(it names the client's reply topic or queue)"
        )
    if inbox is not None:
        raise ValueError("durable_id: a durable client cannot run in an inbox actor")
    # Prefixed: the last segment names the reply topic or queue, and a bare id could be
    # another client's (the task store's is "tasks"), whose answers it would then read.
    return f"{actor_names.client(bus).rsplit('/', 1)[0]}/{DURABLE_PREFIX}{durable_id}"


def new_incarnation() -> str:
    """The request-id prefix of one connection: 8 random hex digits and a dot."""
    return f"{secrets.token_hex(4)}."


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer no caller of this connection awaited (see :meth:`DurableCalls.answers`)."""

    request_id: str
    response: Response
    method: str | None = None  # the call's JSON-RPC method, when the envelope kept it
    name: str | None = None  # the tool (or prompt, resource) it named

    def result(self) -> dict[str, Any]:
        """The call's ``result`` object.

        Raises:
            CallError: the call ended with a JSON-RPC error.
        """
        method = self.method or "tools/call"
        if self.response.error is not None:
            raise CallError.of(method, self.response.error)
        if not isinstance(self.response.result, dict):
            raise CallError(method, INTERNAL_ERROR, "result is not an object")
        return self.response.result

    def tool_result(self) -> types.CallToolResult:
        """A tools/call's result (a tool's own failure is ``isError``, not raised).

        Raises:
            CallError: the call ended with a JSON-RPC error.
        """
        return types.CallToolResult.model_validate(self.result())


class AnswerBuffer:
    """Answers no caller awaits, each once, until :meth:`take` hands them out.

    The seen set holds the correlation key of every answer this connection dispatched
    (awaited or not): it grows with the connection's answers, a few dozen bytes each.
    """

    def __init__(self, max_answers: int = DEFAULT_BUFFERED_ANSWERS) -> None:
        if max_answers < 1:
            raise ValueError(f"max_answers: {max_answers} is not >= 1")
        self._max = max_answers
        self._answers: deque[Answer] = deque()
        self._seen: set[CorrelationKey] = set()
        self._changed = asyncio.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._answers)

    def first_time(self, envelope: Envelope) -> bool:
        """Is this the first answer with this key on this connection? (Then it is noted.)"""
        key = envelope.correlation_key
        if key in self._seen:
            return False
        self._seen.add(key)
        return True

    async def put(self, envelope: Envelope, response: Response) -> None:
        """Keep an answer for :meth:`take`; waits while the buffer is full."""
        answer = Answer(envelope.request_id, response, envelope.method, envelope.name)
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._answers) < self._max)
            self._answers.append(answer)
            self._changed.notify_all()

    async def take(self) -> Answer | None:
        """The oldest answer kept, waiting for one; None once closed and emptied."""
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._answers) or self._closed)
            if not self._answers:
                return None
            answer = self._answers.popleft()
            self._changed.notify_all()
            return answer

    async def close(self) -> None:
        """End :meth:`take` once what is kept was taken."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()


class DurableCalls:
    """What :class:`~cluster.client.BusClient` adds for durable clients."""

    client_id: str
    _principal: str
    _ids: Iterator[int]
    _connection: ClientConnection

    def _buffer(self, what: str) -> AnswerBuffer:
        buffer = self._connection.durable
        if buffer is None:
            raise ValueError(f"{what} needs a durable client: connect with durable_id=...")
        return buffer

    async def send_tool(
        self, name: str, arguments: dict[str, Any] | None = None, *, timeout_s: float = 60.0
    ) -> str:
        """Submit one tools/call without waiting; returns its request id.

        Returns once the broker took the call. Its answer comes through :meth:`answers`
        (of this connection, or of a later one with the same ``durable_id``); the worker
        gives up on it ``timeout_s`` from now.

        Raises:
            ValueError: the client is not durable.
            BusError: the broker did not take the call (e.g. ``ConnectionClosed``).
        """
        self._buffer("send_tool")
        link = self._connection.link
        if link is None:
            raise ValueError("send_tool: the client is closed")
        number = next(self._ids)
        trace = current_trace_context()
        envelope = Envelope(
            client_id=self.client_id,
            request_id=f"{self._connection.id_prefix}{number}",
            principal=self._principal,
            reply_to=self._connection.reply_to,
            traceparent=None if trace is None else trace.traceparent,
            tracestate=None if trace is None else trace.tracestate,
            method="tools/call",
            name=name,
        ).with_deadline_in(timeout_s)
        params = {"name": name, "arguments": arguments or {}}
        call = Request(id=number, method="tools/call", params=params)
        submitted = link.submit([Frame.of(envelope, call)])
        if submitted is not None:
            await submitted
        return envelope.request_id

    def answers(self) -> AsyncIterator[Answer]:
        """Answers no caller of this connection awaits, each once, as they come.

        Those produced while no connection of this ``durable_id`` read, those of
        :meth:`send_tool`, and those whose caller timed out. The iteration ends when the
        client closes (after what was kept is handed out). See :mod:`cluster.durable`.

        Raises:
            ValueError: the client is not durable (at the call).
        """
        buffer = self._buffer("answers()")

        async def each() -> AsyncIterator[Answer]:
            while (answer := await buffer.take()) is not None:
                yield answer

        return each()
