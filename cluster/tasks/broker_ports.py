"""The task store's ports on a broker backend (Kafka, SQS): a client link of its own.

On Ray the store submits to the router and is answered by actor calls. On Kafka and SQS
no router sees a call: workers take it from their pool's topic or queue and publish the
answer to the caller's reply topic or queue. So the store opens one broker client link,
named after the store actor, and submits through it like any ``BusClient``; answers,
progress and server requests come back on its reply address. The link guards pools with
its breakers and carries cancellations to the ledger and the running worker.

The reply address is fixed per bus (the store's name), so a store Ray restarted reads
what was answered while it was away: Kafka's group-less reply consumer starts at the
earliest retained record and SQS keeps the queue of a process that died without closing
it. What it reads twice or for a task it no longer has, the store core drops (its
attempt and round check and sticky terminal states).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from actors.outbox import BUSY_INTERVAL_S, Outbox
from cluster.backends.base import ClientLink, backend_for
from cluster.naming import HandleCache, actor_names
from transports.envelope import CorrelationKey
from transports.errors import BusError, FramesNotSent
from transports.frame import Frame

if TYPE_CHECKING:
    from actors.tasks.store import TaskStoreCore
    from cluster.config import BusConfig

__all__ = ["BrokerTaskStorePorts", "answer_workers", "unsent_of"]

logger = logging.getLogger(__name__)

_ONE_LINK = "link"  # the Outbox's one destination: the link routes each call to its pool


def unsent_of(frames: list[Frame], exc: BaseException) -> list[Frame]:
    """The frames of a failed batch that were not handed over (the others will answer)."""
    if isinstance(exc, FramesNotSent):
        return [frame for frame in frames if frame.envelope.correlation_key in exc.keys]
    return frames


def answer_workers(handles: HandleCache, destination: str, frames: list[Frame]) -> Any:
    """Send the store's answers to server requests to the worker that asked (by actor
    call, on every backend); an unknown worker's are dropped with a warning."""
    try:
        return handles.get(destination).answer.remote(frames)
    except BusError as exc:
        logger.warning("dropped %d answer(s) for %s: %s", len(frames), destination, exc)
        return None


class BrokerTaskStorePorts:
    """:class:`~actors.tasks.spec.TaskStorePorts` over a broker client link."""

    def __init__(self, config: BusConfig, handles: HandleCache) -> None:
        self._config = config
        self._handles = handles
        self.core: TaskStoreCore | None = None
        self._link: ClientLink | None = None
        self._receiving: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.submissions: Outbox[str, Frame] = Outbox(
            self._submit, on_failure=self._submit_failed, min_interval_s=BUSY_INTERVAL_S
        )
        self.answers: Outbox[str, Frame] = Outbox(self._send_answers)

    async def open(self) -> None:
        """Connect the link and start reading answers (before the store loads its tasks:
        reloaded tasks may be submitted again at once)."""
        if self._link is not None:
            return
        discovery = await self._handles.get_async(actor_names.discovery(self._config.name))
        link = await backend_for(self._config).open_client(
            actor_names.tasks(self._config.name), None, discovery, self._on_frame
        )
        self._link = link
        self._receiving = asyncio.get_running_loop().create_task(link.receive())

    async def close(self) -> None:
        link, self._link = self._link, None
        if self._receiving is not None:
            self._receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._receiving
        if link is not None:
            await link.close()

    @property
    def address(self) -> str:
        if self._link is None:
            raise RuntimeError("the task store's broker link is not open")
        return self._link.reply_to

    async def _on_frame(self, frame: Frame) -> None:
        if self.core is None:
            return
        try:
            await self.core.on_frame(frame)
        except BusError as exc:
            logger.warning("dropped an undecodable frame: %s", exc)

    def submit(self, frames: list[Frame]) -> None:
        for frame in frames:
            self.submissions.put(_ONE_LINK, frame)

    def _submit(self, _: str, frames: list[Frame]) -> Any:
        if self._link is None:
            raise BusError("the task store's broker link is not open")
        return self._link.submit(frames)

    def _submit_failed(self, _: str, frames: list[Frame], exc: BaseException) -> None:
        # The broker took none of these (or refused them): their tasks fail now, with
        # the reason, rather than sit "working" until their deadline.
        logger.warning("could not submit %d task call(s): %s", len(frames), exc)
        core = self.core
        if core is None:
            return
        for frame in unsent_of(frames, exc):
            refusal = {"code": 1006, "message": f"the broker did not take the call: {exc}"}
            self._spawn(core.fail_call(frame, refusal))

    async def check_router(self) -> None:
        return None  # no router holds broker calls: a lost run is the ledger's 1004

    def cancel(self, keys: list[CorrelationKey]) -> None:
        if self._link is not None:  # the ledger first, then the worker running it
            self._link.cancel(keys)

    def answer(self, destination: str, frame: Frame) -> None:
        self.answers.put(destination, frame)

    def _send_answers(self, destination: str, frames: list[Frame]) -> Any:
        return answer_workers(self._handles, destination, frames)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)  # the loop holds tasks weakly
        task.add_done_callback(self._tasks.discard)
