"""A Jepsen-style history of requests and the one checker every fault test shares.

Each request is recorded when it is invoked and when its outcome arrives; a request's
expected answer is unique to it (a token the tool echoes), so an answer that belongs to
another request is seen as *crossed*. :func:`check` reads a finished history and counts:

* **lost**: invoked, never answered (neither a result nor an error) once the load ended;
* **crossed**: answered with a result that belongs to another request;
* **hung**: answered, but later than the request's deadline plus a grace;
* **duplicated**: a request given two outcomes, or run more often than allowed (the
  executions per request key, when the test can count them on the server side).

Errors are outcomes, not losses: a caller told "may have run" (1004) or "deadline
exceeded" (1001) knows where it stands. Tests assert the verdict's counts and, per case,
which error codes are acceptable.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from transports.errors import CallError

__all__ = ["History", "Operation", "Verdict", "check"]

_ids = itertools.count()


@dataclass
class Operation:
    """One request: what was asked, what it must answer, and what came back."""

    key: str  # unique per request; the tool echoes it
    caller: int
    deadline_s: float
    invoked_at: float
    outcomes: list[tuple[str, Any, float]] = field(default_factory=list)  # kind, value, at

    @property
    def answered(self) -> bool:
        return bool(self.outcomes)


@dataclass
class Verdict:
    """What :func:`check` found (every list names the request keys)."""

    total: int
    ok: int
    errors: Counter[int]  # error code -> count
    lost: list[str]
    crossed: list[str]
    hung: list[str]
    duplicated: list[str]

    @property
    def clean(self) -> bool:
        """Nothing lost, crossed, hung or duplicated."""
        return not (self.lost or self.crossed or self.hung or self.duplicated)

    def __str__(self) -> str:
        return (
            f"{self.total} requests: {self.ok} ok, errors {dict(self.errors)}, "
            f"lost {len(self.lost)}, crossed {len(self.crossed)}, hung {len(self.hung)}, "
            f"duplicated {len(self.duplicated)} (first: "
            f"{(self.lost + self.crossed + self.hung + self.duplicated)[:5]})"
        )


class History:
    """Records every request of a load as invoke / outcome events (one per request)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.operations: dict[str, Operation] = {}
        self.run_id = f"h{next(_ids)}-{id(self):x}"

    def invoke(self, caller: int, deadline_s: float) -> Operation:
        key = f"{self.run_id}-{len(self.operations)}"
        operation = Operation(key, caller, deadline_s, self._clock())
        self.operations[key] = operation
        return operation

    def record(self, operation: Operation, kind: str, value: Any) -> None:
        operation.outcomes.append((kind, value, self._clock()))

    async def call(
        self,
        caller: int,
        request: Callable[[str], Awaitable[Any]],
        *,
        deadline_s: float,
        answer_of: Callable[[Any], Any] = lambda result: result,
    ) -> None:
        """Invoke ``request(key)``, record its outcome; the caller waits at most its
        deadline plus a grace, then records nothing (the request is then lost or hung).

        ``answer_of`` turns what ``request`` returned into the value compared with the
        key (e.g. a tool result's structured content).
        """
        operation = self.invoke(caller, deadline_s)
        try:
            async with asyncio.timeout(deadline_s * 2 + 5):
                result = await request(operation.key)
        except CallError as exc:
            self.record(operation, "error", exc.code)
        except TimeoutError:
            return  # no outcome: check() counts it
        else:
            self.record(operation, "ok", answer_of(result))


def check(
    history: History,
    *,
    grace_s: float = 5.0,
    executions: Mapping[str, int] | None = None,
    max_executions: int = 1,
) -> Verdict:
    """The verdict on a finished history (see the module docstring for each count).

    ``executions``: how many times the server ran each request key, when the test
    counts it (a side effect per run); a key run more than ``max_executions`` times is
    duplicated.
    """
    ok = 0
    errors: Counter[int] = Counter()
    lost: list[str] = []
    crossed: list[str] = []
    hung: list[str] = []
    duplicated: list[str] = []
    for key, operation in history.operations.items():
        if not operation.outcomes:
            lost.append(key)
            continue
        if len(operation.outcomes) > 1:
            duplicated.append(key)
        kind, value, at = operation.outcomes[0]
        if at - operation.invoked_at > operation.deadline_s + grace_s:
            hung.append(key)
        if kind == "ok":
            if value != key:
                crossed.append(key)
            else:
                ok += 1
        else:
            errors[int(value)] += 1
    for key, runs in (executions or {}).items():
        if runs > max_executions and key not in duplicated:
            duplicated.append(key)
    return Verdict(
        total=len(history.operations),
        ok=ok,
        errors=errors,
        lost=lost,
        crossed=crossed,
        hung=hung,
        duplicated=duplicated,
    )
