"""``ToolCaller``: a Ray Data callable class that calls one bus tool per row.

::

    ds.map_batches(
        ToolCaller,
        fn_constructor_kwargs={"bus": "demo", "tool": "score", "arguments": {"text": "review"}},
        batch_format="pyarrow",
        concurrency=4,
        batch_size=256,
    )

Ray Data builds one instance per actor of its pool and calls it synchronously, one batch
at a time. ``BusClient`` is asyncio-bound, so each instance runs its own event loop in a
daemon thread for its whole life: the constructor connects there once, and each batch is
one coroutine submitted to that loop (about 50 us per batch; connecting costs a client
endpoint actor, far too much to pay per batch).

Start-up checks fail the job before any row is called (Ray Data fails a job whose actor
constructor raises, with the message in the error): the bus must be running, offer the
tool, and every argument the tool requires must be fed by a column. The columns
themselves are checked on each batch, before its rows are called.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
from pydantic import ValidationError

from cluster.client import BusClient
from cluster.data.columns import ArgumentMapping, ArgumentsFn, Outcome, as_arrow, with_outcomes
from cluster.data.errors import ToolCallerError
from cluster.data.loop import LoopThread
from cluster.data.retry import RetryPolicy, call_with_retry, is_safe_to_repeat
from transports.errors import INTERNAL_ERROR, BusError, ConnectionClosed

__all__ = ["ToolCaller"]

logger = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 10.0


class _Calls:
    """The async side: one client, one tool, at most ``max_concurrency`` calls in flight."""

    def __init__(
        self,
        client: BusClient,
        tool: Mapping[str, Any],
        *,
        max_concurrency: int,
        timeout_s: float,
        retry: RetryPolicy,
    ) -> None:
        self._client = client
        self._name: str = tool["name"]
        self._safe = is_safe_to_repeat(tool)
        self._slots = asyncio.Semaphore(max_concurrency)
        self._timeout_s = timeout_s
        self._retry = retry
        self._rng = random.Random()

    @classmethod
    async def open(
        cls, bus: str, tool: str, mapping: ArgumentMapping, connect_timeout_s: float, **options: Any
    ) -> _Calls:
        try:
            client = await BusClient.connect(bus, timeout_s=connect_timeout_s)
        except (ConnectionClosed, TimeoutError) as exc:
            raise ToolCallerError(
                f"bus {bus!r} is not running on this Ray cluster ({exc})"
            ) from exc
        try:
            entry = await _find_tool(client, bus, tool)
            mapping.check_tool(entry)
        except BaseException:
            await client.close()
            raise
        return cls(client, entry, **options)

    async def call_all(self, rows: Sequence[dict[str, Any] | Outcome]) -> list[Outcome]:
        return await asyncio.gather(
            *(_done(row) if isinstance(row, Outcome) else self._call(row) for row in rows)
        )

    async def _call(self, arguments: dict[str, Any]) -> Outcome:
        # The slot is held through the backoff too: a pushed-back actor sends fewer calls.
        async with self._slots:
            try:
                result = await call_with_retry(
                    lambda: self._client.call_tool(
                        self._name, arguments, timeout_s=self._timeout_s
                    ),
                    tool_is_safe=self._safe,
                    policy=self._retry,
                    rng=self._rng,
                )
            except BusError as exc:
                return Outcome.of_error(exc)
            except ValidationError as exc:  # one server answering nonsense fails one row
                return Outcome.failed(INTERNAL_ERROR, f"the tool's result is malformed: {exc}")
            return Outcome.of_result(result)

    async def close(self) -> None:
        await self._client.close()


async def _done(outcome: Outcome) -> Outcome:
    return outcome


async def _find_tool(client: BusClient, bus: str, tool: str) -> dict[str, Any]:
    catalogs = await client.catalogs()
    offered: list[str] = []
    for catalog in catalogs.values():
        for entry in catalog.tools:
            if entry.get("name") == tool:
                return dict(entry)
            offered.append(str(entry.get("name")))
    raise ToolCallerError(
        f"bus {bus!r} offers no tool {tool!r}; its tools are {sorted(set(offered)) or 'none'}"
    )


class ToolCaller:
    """Calls ``tool`` on ``bus`` once per row; adds ``result`` and ``error`` columns.

    Args:
        bus: The name of a running bus on this Ray cluster.
        tool: The tool to call.
        arguments: Each tool argument -> the column holding its value, or a function of a
            row (a dict of column values) returning the arguments.
        max_concurrency: Calls in flight at once per instance (per actor of the pool).
        timeout_s: Deadline of one try of one call.
        retry: A :class:`~cluster.data.retry.RetryPolicy` (or its fields as a dict): how
            pushed-back calls are retried. Only calls that are safe to repeat are.
        connect_timeout_s: How long the bus may take to answer the constructor.
        result_column: Name of the column of results (JSON text).
        error_column: Name of the column of errors (``{code, message}`` or null).

    Raises:
        ToolCallerError: from the constructor when the bus is not running, has no such
            tool, or ``arguments`` leaves a required argument unfed; from a batch whose
            dataset lacks a mapped column.
    """

    def __init__(
        self,
        bus: str,
        tool: str,
        arguments: Mapping[str, str] | ArgumentsFn,
        *,
        max_concurrency: int = 32,
        timeout_s: float = 60.0,
        retry: RetryPolicy | Mapping[str, Any] | None = None,
        connect_timeout_s: float = 30.0,
        result_column: str = "result",
        error_column: str = "error",
    ) -> None:
        if max_concurrency < 1:
            raise ToolCallerError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self._mapping = ArgumentMapping(arguments)
        self._produced = (result_column, error_column)
        policy = (
            retry if isinstance(retry, RetryPolicy) else RetryPolicy.model_validate(retry or {})
        )
        self._loop = LoopThread()
        try:
            self._calls: _Calls | None = self._loop.run(
                _Calls.open(
                    bus,
                    tool,
                    self._mapping,
                    connect_timeout_s,
                    max_concurrency=max_concurrency,
                    timeout_s=timeout_s,
                    retry=policy,
                )
            )
        except BaseException:
            self._loop.stop()
            raise

    def __call__(self, batch: pa.Table | Any) -> pa.Table:
        """Call the tool for every row of ``batch`` (any Ray Data batch format).

        Raises:
            ToolCallerError: the batch lacks a mapped column or already has an output one.
        """
        if self._calls is None:
            raise ToolCallerError("this ToolCaller is closed")
        table = as_arrow(batch)
        self._mapping.check_columns(table.column_names, self._produced)
        outcomes = self._loop.run(self._calls.call_all(self._mapping.rows(table)))
        return with_outcomes(table, outcomes, *self._produced)

    def close(self) -> None:
        """Close the bus client and stop the loop (Ray Data's actor shutdown does this)."""
        calls = getattr(self, "_calls", None)  # None too when the constructor failed
        self._calls = None
        if calls is not None:
            try:
                self._loop.run(calls.close(), _CLOSE_TIMEOUT_S)
            finally:
                self._loop.stop()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            logger.exception("closing a ToolCaller failed")
