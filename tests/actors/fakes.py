"""Fakes that implement the actors' real ports, for unit tests without Ray."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from actors.router.core import Completion
from actors.router.outcomes import CallTally
from transports.envelope import CorrelationKey
from transports.frame import Frame
from transports.message import Notification, Request, Response, TransportMessage


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class RecordingRouterPorts:
    delivered: list[tuple[str, list[Frame]]] = field(default_factory=list)
    cancelled: list[tuple[str, list[CorrelationKey]]] = field(default_factory=list)
    replies: list[Frame] = field(default_factory=list)
    breaker_opened_on: list[str] = field(default_factory=list)

    def deliver(self, worker: str, frames: list[Frame]) -> None:
        self.delivered.append((worker, frames))

    def breaker_opened(self, worker: str) -> None:
        self.breaker_opened_on.append(worker)

    def cancel(self, worker: str, keys: list[CorrelationKey]) -> None:
        self.cancelled.append((worker, keys))

    def reply(self, frames: list[Frame]) -> None:
        self.replies.extend(frames)

    def delivered_to(self, worker: str) -> list[Frame]:
        return [f for w, frames in self.delivered if w == worker for f in frames]


@dataclass
class RecordingRouterMetrics:
    """The router's metrics port: keeps every tally it was handed."""

    tallies: list[CallTally] = field(default_factory=list)

    def calls_ended(self, tally: CallTally) -> None:
        self.tallies.append(tally)

    def outcomes(self) -> dict[tuple[str, str, str], int]:
        """Every tally's counts added up."""
        total: dict[tuple[str, str, str], int] = {}
        for tally in self.tallies:
            for key, count in tally.outcomes.items():
                total[key] = total.get(key, 0) + count
        return total


@dataclass
class RecordingWorkerPorts:
    """Collects what a worker sends; ``wait_for`` waits (bounded) for a message."""

    sent: list[tuple[str, Frame]] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def reply(self, destination: str, frame: Frame, completion: Completion | None = None) -> None:
        self.sent.append((destination, frame))
        if completion is not None:  # sent at once here: the answer has left
            self.completions.append(completion)
        self.changed.set()

    def completed(self, completion: Completion) -> None:
        self.completions.append(completion)
        self.changed.set()

    def messages(self) -> list[TransportMessage]:
        return [frame.decode() for _, frame in self.sent]

    async def wait_for(
        self,
        predicate: type[Response] | type[Notification] | type[Request],
        count: int = 1,
        timeout_s: float = 10,
    ) -> list[Frame]:
        async with asyncio.timeout(timeout_s):
            while True:
                found = [f for _, f in self.sent if isinstance(f.decode(), predicate)]
                if len(found) >= count:
                    return found
                self.changed.clear()
                await self.changed.wait()
