"""Starting, stopping and reading a bus's triggers (called by :mod:`cluster.bus`).

Triggers start once the pools are routed (a record's call finds its tool) and stop first
when the bus stops, while the pools still answer: each replica takes no more records,
finishes those in hand (bounded), commits and leaves its group; what it could not finish
is delivered again by the group when the trigger next runs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import ray
from ray.exceptions import RayError

from cluster.config import BusConfig
from cluster.naming import actor_names, get_actor_async
from cluster.ray_actors.restarts import CONTROL_ACTOR_OPTIONS
from cluster.triggers.errors import TriggerStartFailed
from cluster.triggers.settings import TriggerConfig
from transports.errors import ConnectionClosed

__all__ = [
    "TriggerStartFailed",
    "start_triggers",
    "stop_triggers",
    "trigger_row",
    "trigger_status",
]

logger = logging.getLogger(__name__)

_STATS_TIMEOUT_S = 5.0  # status does not wait longer for a replica that does not answer


@functools.cache
def _trigger_actor() -> Any:
    # Imported on first use: its ports import aiokafka and aioboto3 (~0.25 s), which
    # every `raybus` command and every bus without triggers would otherwise pay.
    from cluster.ray_actors.trigger import TriggerActor

    return ray.remote(TriggerActor)


async def start_triggers(config: BusConfig) -> None:
    """Create every replica of every trigger and wait until each runs.

    Raises:
        TriggerStartFailed: naming the first trigger that could not start and why.
    """
    if config.sqs is not None and any(
        p.broker == "sqs" for t in config.triggers for p in t.places()
    ):
        from cluster.backends.sqs import with_credentials  # botocore: only when used

        # Settled here, at the edge, as the SQS backend does: never in the actors.
        sqs = await asyncio.to_thread(with_credentials, config.sqs)
        config = config.model_copy(update={"sqs": sqs})
    starting = []
    for trigger in config.triggers:
        for replica in range(trigger.replicas):
            handle = (
                _trigger_actor()
                .options(
                    name=actor_names.trigger(config.name, trigger.name, replica),
                    **CONTROL_ACTOR_OPTIONS,
                )
                .remote(config, trigger.name, replica)
            )
            starting.append((trigger.name, handle.start.remote()))
    for name, started in starting:
        try:
            await started
        except TriggerStartFailed as exc:  # Ray re-raises it wrapped: unwrap to one line
            cause = getattr(exc, "cause", exc)
            raise TriggerStartFailed(cause.trigger, cause.reason) from None
        except RayError as exc:
            raise TriggerStartFailed(name, f"its actor failed: {exc}") from None
    if config.triggers:
        logger.info("bus %s: triggers started: %s", config.name, [t.name for t in config.triggers])


async def stop_triggers(names: list[str], timeout_s: float) -> None:
    """Drain the trigger actors named (bounded), then end them for good."""

    async def stop(name: str) -> None:
        try:
            handle = await get_actor_async(name)
        except ConnectionClosed:
            return
        try:
            async with asyncio.timeout(timeout_s + 10):
                left = await handle.drain.remote(timeout_s)
            if left:
                logger.info("%s: %d records unfinished; delivered again next time", name, left)
        except (RayError, TimeoutError) as exc:
            logger.warning("trigger %s not drained cleanly: %s", name, exc)
        ray.kill(handle, no_restart=True)

    await asyncio.gather(*map(stop, names))


async def trigger_status(bus: str, triggers: list[TriggerConfig]) -> dict[str, dict[str, Any]]:
    """Each trigger's row for ``raybus status``: its replicas summed, lag from replica 0."""

    async def replica_stats(name: str) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(_STATS_TIMEOUT_S):
                handle = await get_actor_async(name)
                stats: dict[str, Any] = await handle.stats.remote()
                return stats
        except (ConnectionClosed, RayError, TimeoutError):
            return None

    rows: dict[str, dict[str, Any]] = {}
    for trigger in triggers:
        names = [actor_names.trigger(bus, trigger.name, i) for i in range(trigger.replicas)]
        replicas = await asyncio.gather(*map(replica_stats, names))
        rows[trigger.name] = trigger_row(trigger, replicas)
    return rows


_SUMMED = ("consumed", "ok", "skipped", "retried", "dead_lettered", "in_flight", "max_in_flight")


def trigger_row(trigger: TriggerConfig, replicas: list[dict[str, Any] | None]) -> dict[str, Any]:
    """One trigger's status row from its replicas' stats (None: a replica not answering)."""
    answering = [r for r in replicas if r is not None]
    row: dict[str, Any] = {
        "source": str(trigger.source_place),
        "tool": trigger.tool,
        "output": None if trigger.output_place is None else str(trigger.output_place),
        "dead_letter": str(trigger.dead_letter_place),
        "replicas": len(replicas),
        "answering": len(answering),
    }
    row.update({key: sum(r.get(key) or 0 for r in answering) for key in _SUMMED})
    row["rate_per_s"] = round(sum(r.get("rate_per_s") or 0.0 for r in answering), 2)
    first = replicas[0] if replicas else None
    row["lag"] = first.get("lag") if first else None
    row["lag_age_s"] = first.get("lag_age_s") if first else None
    row["lag_error"] = first.get("lag_error") if first else None
    row["lag_readings"] = first.get("lag_readings", 0) if first else 0
    errors = [r["last_error"] for r in answering if r.get("last_error")]
    row["last_error"] = errors[0] if errors else None
    states = {r.get("state") for r in answering}
    if len(answering) < len(replicas):
        row["state"] = "not answering"
    else:
        order = ("stalled", "draining", "starting", "running")
        row["state"] = next((s for s in order if s in states), "running")
    return row
