"""A worker's completions for the router, carried on the answer to the router's next call.

The router learns that a call ended from a :class:`~actors.router.core.Completion`.
Sending each batch of them as its own actor call costs the worker and the router one
call each (~0.3 ms of CPU on each side here) per batch; but under load the router calls
the worker anyway, with the next calls, and that call's answer is free to carry them.
So :class:`CompletionReports` holds completions and hands them over in two ways:

* :meth:`CompletionReports.answer`, answering the router's next ``deliver`` (the common
  case under load: no call of its own). When nothing has ended yet, the answer waits up
  to ``hold_s`` for the first completion: under load one comes within a few ms, and a
  pool whose callers call again as soon as they are answered (every slot busy: the
  router needs each completion to send the next call) then never pays a call for them;
* ``send``, its own call, when no ``deliver`` came within ``linger_s`` (an idle pool),
  or at once when the router may be waiting for it: when, as far as this worker knows,
  the router counts it full (``capacity`` calls it has not heard the end of), the router
  sends it nothing more, so no ``deliver`` would come to carry the news.

Some news must not wait: a verdict on the pool (a fault, or a call slower than the
breaker's threshold) goes at once, so the breaker opens within about one hop of the
caller's answer; and while the router asks for prompt news (its pool's breaker is not
closed: a probe's success closes it), nothing is held. "At once" starts when the call's
answer has left the worker: a completion only reaches this holder then (see
``cluster.ray_actors.worker``), so a router never forgets a call whose answer died with
its worker.

Nothing is sent twice: a completion leaves the holder once, by one of the two ways. The
router hears of every call's end within ``linger_s``, or at once when it needs the slot
or the verdict; its balancing and in-flight counts lag by at most that much.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from actors.router.core import Completion

__all__ = ["COMPLETION_HOLD_S", "COMPLETION_LINGER_S", "CompletionReports", "is_verdict"]

# How long a deliver's answer waits for a first completion. The router sends a worker
# its next batch only once the previous one was answered, and spaces batches to a busy
# worker by BUSY_INTERVAL_S (5 ms) anyway: holding the answer as long costs no more.
COMPLETION_HOLD_S = 0.005
# How long a completion waits for a deliver to ride back on before it is sent alone.
# Closed-loop callers call again within a few ms of their answer (one round trip through
# the client and the router), so most completions ride; 20 ms bounds how stale the
# router's view of an idle worker may get, far below any breaker or autoscaler window.
COMPLETION_LINGER_S = 0.02


class CompletionReports:
    """Holds completions until the router's next call to the worker, or ``linger_s``.

    Args:
        send: hands a batch to the router in a call of its own (the fallback path).
        capacity: calls the router sends this worker at most at once.
        slow_call_s: the breaker's slow-call threshold: a call this slow is a verdict.
        linger_s: how long a completion may wait for a call to ride back on.
    """

    def __init__(
        self,
        send: Callable[[list[Completion]], None],
        *,
        capacity: int,
        slow_call_s: float = float("inf"),
        linger_s: float = COMPLETION_LINGER_S,
    ) -> None:
        self._send = send
        self._capacity = capacity
        self._slow_call_s = slow_call_s
        self._prompt = False  # the router asked for every completion at once
        self._linger_s = linger_s
        self._held: list[Completion] = []
        self._timer: asyncio.TimerHandle | None = None
        self._received = 0  # calls the router delivered here
        self._reported = 0  # completions handed over, either way
        self._answers_waiting = 0
        self._arrived = asyncio.Event()

    @property
    def held(self) -> int:
        return len(self._held)

    def received(self, count: int, *, prompt: bool = False) -> None:
        """The router delivered ``count`` calls (each ends in exactly one completion).

        ``prompt``: the router wants every completion at once until it says otherwise
        with a later delivery (its pool's breaker is not closed).
        """
        self._received += count
        self._prompt = prompt

    def add(self, completion: Completion) -> None:
        """A call ended: hold its completion, or send at once if the router needs it."""
        self._held.append(completion)
        if self._answers_waiting:
            self._arrived.set()  # a deliver's answer is waiting for exactly this
        elif self._urgent(completion):
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._linger_s, self.flush)

    async def answer(self, hold_s: float = COMPLETION_HOLD_S) -> list[Completion]:
        """Everything held, waiting up to ``hold_s`` for a first one when none is."""
        if not self._held and hold_s > 0:
            self._answers_waiting += 1
            self._arrived.clear()
            try:
                async with asyncio.timeout(hold_s):
                    await self._arrived.wait()
            except TimeoutError:
                pass  # nothing ended meanwhile: answer with nothing
            finally:
                self._answers_waiting -= 1
        return self.take()

    def _urgent(self, completion: Completion) -> bool:
        if self._prompt or is_verdict(completion, self._slow_call_s):
            return True
        # The router counts this worker full: it sends nothing more, so no deliver
        # would come to carry the news.
        return self._received - self._reported >= self._capacity

    def take(self) -> list[Completion]:
        """Everything held, to answer the router's call with (empty: nothing ended)."""
        held, self._held = self._held, []
        self._reported += len(held)
        self._cancel_timer()
        return held

    def flush(self) -> None:
        """Send everything held in a call of its own (no-op when nothing is held)."""
        held = self.take()
        if held:
            self._send(held)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def is_verdict(completion: Completion, slow_call_s: float) -> bool:
    """Does this call's end count against its pool in the breaker (a fault, or a call
    that ran at least the breaker's slow-call threshold)?"""
    if completion.failed:
        return True
    return not completion.abandoned and completion.duration_s >= slow_call_s
