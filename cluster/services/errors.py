"""Errors of the local development services (Kafka broker, SQS endpoint).

``ServiceError`` sits under the bus-wide root::

    BusError
    └── ServiceError          no    a local service could not be fetched, started or reached

It carries the tail of the service's log, because "the broker did not come up" is only
actionable next to what the broker said.
"""

from __future__ import annotations

from transports.errors import BusError

__all__ = ["ServiceError"]


class ServiceError(BusError):
    """A local development service could not be fetched, started, reached or stopped.

    Args:
        service: which service (``"kafka"``, ``"sqs"``).
        detail: what went wrong, in a sentence.
        log_tail: the last lines of the service's log, or ``""`` when there is none.
    """

    def __init__(self, service: str, detail: str, log_tail: str = "") -> None:
        super().__init__(service, detail, log_tail)
        self.service = service
        self.detail = detail
        self.log_tail = log_tail

    def __str__(self) -> str:
        message = f"{self.service}: {self.detail}"
        if self.log_tail:
            message += f"\n--- last lines of the {self.service} log ---\n{self.log_tail}"
        return message
