"""The error a trigger that cannot start raises (apart from its ports, whose clients
import the Kafka and SQS libraries: the CLI and :mod:`cluster.bus` need only this)."""

from __future__ import annotations

from transports.errors import BusError

__all__ = ["TriggerStartFailed"]


class TriggerStartFailed(BusError):
    """A trigger could not start (its topic, its tool, its map: callable, the broker)."""

    def __init__(self, trigger: str, reason: str) -> None:
        super().__init__(trigger, reason)
        self.trigger = trigger
        self.reason = reason

    def __str__(self) -> str:
        return f"trigger {self.trigger}: {self.reason}"
