"""One replica of an event trigger as a Ray actor (named, detached, restarted by Ray).

It reads the trigger's Kafka topic, calls the tool through an ordinary
:class:`~cluster.client.BusClient` (answers delivered straight to this actor), and writes
outputs and dead letters (the loop: :mod:`actors.triggers.core`). Replica 0 also reads
the group's lag in the background, so :meth:`TriggerActor.stats` never waits on the broker.

A restarted replica (its process died) starts itself again (:mod:`.restarts`): its group
resumes from the committed offsets, so records it had in hand are delivered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from actors.triggers.core import TriggerCore, TriggerPorts
from cluster.client import BusClient
from cluster.config import BusConfig
from cluster.metrics.recorders import trigger_families
from cluster.metrics.registry import FamilySnapshot
from cluster.naming import actor_names
from cluster.ray_actors.restarts import restarted, start_itself
from cluster.triggers.ports import (
    BusCaller,
    RecordSource,
    SourcePort,
    TriggerStartFailed,
    Writers,
    mapper_for,
    source_for,
)
from transports.errors import BusError
from transports.frame import Frame

__all__ = ["TriggerActor"]

logger = logging.getLogger(__name__)

_LAG_INTERVAL_S = 2.0  # how often replica 0 reads the group's lag
_RESTART_RETRY_S = 5.0


class TriggerActor:
    """``start`` runs the trigger; ``stats`` reads it; ``drain`` stops it cleanly."""

    def __init__(self, config: BusConfig, trigger: str, replica: int) -> None:
        self._config = config
        self._trigger = next(t for t in config.triggers if t.name == trigger)
        self._replica = replica
        self._name = actor_names.trigger(config.name, trigger, replica)
        self._begun = False
        self._started: asyncio.Future[None] | None = None
        self._client: BusClient | None = None
        self._source: RecordSource | None = None
        self._writers: Writers | None = None
        self._core: TriggerCore | None = None
        self._loop: asyncio.Task[None] | None = None
        self._lag_reader: asyncio.Task[None] | None = None
        self._lag: int | None = None
        self._lag_at: float | None = None
        self._lag_error: str | None = None
        self._lag_readings = 0
        self._draining = False
        self._start_error: str | None = None
        if restarted():
            start_itself("restart", lambda: self._begun)

    async def restart(self) -> None:
        """Start again after Ray restarted this replica, until it works (a broker or
        the bus may be away for a while): nobody else would ever start it again."""
        while True:
            try:
                await self.start(check_tool=False)
                return
            except BusError as exc:
                self._start_error = str(exc)
                logger.warning("%s: could not start again (%s); retrying", self._name, exc)
            await asyncio.sleep(_RESTART_RETRY_S)  # pacing of the retries

    async def start(self, check_tool: bool = True) -> None:
        """Connect, join the group, start the loop; idempotent.

        Raises:
            TriggerStartFailed: the topic is missing, no pool offers the tool, ``map:``
                does not import, or the broker cannot be reached.
        """
        self._begun = True
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                await self._start(check_tool)
            except BaseException as exc:
                await self._close_parts()
                if isinstance(exc, BusError) and not isinstance(exc, TriggerStartFailed):
                    exc = TriggerStartFailed(self._trigger.name, str(exc))  # one line
                failed, self._started = self._started, None
                failed.set_exception(exc)
                failed.exception()  # retrieved: concurrent starts see it, nobody else must
                raise exc from None
            self._started.set_result(None)
            self._start_error = None
        await asyncio.shield(self._started)

    async def _start(self, check_tool: bool) -> None:
        trigger, config = self._trigger, self._config
        mapper = mapper_for(trigger)
        connection = await BusClient.connect(
            config.name,
            principal=f"trigger:{trigger.name}",
            inbox=self._name,
            labels=dict(trigger.labels),
        )
        # A session of its own: its client id is new at every start, so a restarted
        # replica's request ids never meet those its previous process left running.
        self._client = connection.new_session()
        if check_tool:
            names = {tool.name for tool in await self._client.list_tools()}
            if trigger.tool not in names:
                raise TriggerStartFailed(trigger.name, f"no pool offers tool {trigger.tool!r}")
        self._writers = Writers(config, trigger, self._replica)
        self._source = source_for(config, trigger, self._replica)
        await self._writers.start()
        await self._source.start()
        output = trigger.output_place
        ports = TriggerPorts(
            source=SourcePort(self._source),
            caller=BusCaller(self._client, trigger.timeout_s),
            mapper=mapper,
            dead_letter=self._writers.sink(trigger.dead_letter_place),
            output=None if output is None else self._writers.sink(output),
        )
        self._core = TriggerCore(trigger.rules(), ports)
        loop = asyncio.get_running_loop()
        self._loop = loop.create_task(self._core.run())
        if self._replica == 0:
            self._lag_reader = loop.create_task(self._read_lag())
        logger.info("trigger %s replica %d started", trigger.name, self._replica)

    async def deliver(self, frames: list[Frame]) -> None:
        """Answers to this replica's calls (its client's inbox)."""
        if self._client is not None:
            await self._client.deliver(frames)

    async def _read_lag(self) -> None:
        source = self._source
        assert source is not None
        while True:
            try:
                self._lag = await source.lag()
                self._lag_at, self._lag_error = time.time(), None
                self._lag_readings += 1
            except BusError as exc:
                self._lag_error = str(exc)
            await asyncio.sleep(_LAG_INTERVAL_S)  # pacing of a background reading

    def stats(self) -> dict[str, Any]:
        """Counters, rate and (replica 0) lag: never asks the broker."""
        core = self._core
        row: dict[str, Any] = core.stats.snapshot() if core is not None else {}
        row.update(replica=self._replica, lag=self._lag, lag_error=self._lag_error)
        row["lag_readings"] = self._lag_readings
        row["lag_age_s"] = None if self._lag_at is None else round(time.time() - self._lag_at, 1)
        if self._draining:
            row["state"] = "draining"
        elif core is None:
            row["state"] = "starting"
            row["last_error"] = self._start_error
        elif row.get("stalled"):
            row["state"] = "stalled"
        else:
            row["state"] = "running"
        return row

    def metrics_snapshot(self) -> list[FamilySnapshot]:
        """This replica's series for ``raybus up --metrics-port`` (cluster.metrics)."""
        return trigger_families(self._config.name, self._trigger.name, self.stats())

    async def drain(self, timeout_s: float) -> int:
        """Take no more records, finish those in hand (bounded), commit, disconnect.

        Returns how many records were left unfinished (delivered again later).
        """
        self._draining = True
        left = 0
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        if self._core is not None:
            left = await self._core.drain(timeout_s)
        await self._close_parts()
        logger.info(
            "trigger %s replica %d drained (%d left)", self._trigger.name, self._replica, left
        )
        return left

    async def _close_parts(self) -> None:
        if self._lag_reader is not None:
            self._lag_reader.cancel()
        parts = (self._source, self._writers, self._client)
        self._source, self._writers, self._client = None, None, None
        for part in parts:
            if part is not None:
                try:
                    await part.close()
                except BusError as exc:
                    logger.warning("trigger %s: closing: %s", self._trigger.name, exc)
