"""A pool server for broker crash tests: the testkit's server, in a worker that exits after
answering a call of ``record`` and before acknowledging it (Kafka commit, SQS delete).

Name it as a pool's ``server:`` (``tests.cluster.exit_before_ack:server``); never import
it in a test process, where it would wrap that process's source too. A worker imports
its server inside its own process before it opens its broker source, so importing this
module there wraps :class:`~cluster.backends.broker_source.BrokerWorkerSource` in that
process only: the fault lives here, in the tests; raybus itself has no switch for it.
(Ray workers can import ``tests`` because the repository root is on their path.)

Only a call this worker ran itself ends it: a redelivered copy answered from the ledger
never reaches the wrapped step, so the worker that takes over survives. A call of
``record_read_only`` skips the ledger: its redelivered copy runs again on the worker that
takes over, which finds ``<path>.exited`` written and survives (one exit per path).
Before exiting, the worker writes ``<record's path>.exited`` so a test can prove the
fault happened (a test that passed without a crash would prove nothing).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cluster.backends.broker_source import BrokerWorkerSource
from tests.cluster.read_only_probe import READ_ONLY_TOOL, server
from transports.envelope import Envelope
from transports.message import Request

__all__ = ["EXIT_CODE", "READ_ONLY_TOOL", "TOOL", "server"]

TOOL = "record"
EXIT_CODE = 17


_run_call = BrokerWorkerSource._run_call


async def _run_call_then_exit(
    self: BrokerWorkerSource, message: Any, envelope: Envelope, key: str, *, ledgered: bool = True
) -> None:
    # `_run_call` returns once the response is in the ledger and published to the caller;
    # the source acknowledges the delivery right after it. Exiting here is the window
    # "answered, not acknowledged".
    await _run_call(self, message, envelope, key, ledgered=ledgered)
    if envelope.name in (TOOL, READ_ONLY_TOOL) and isinstance(message, Request):
        params = message.params if isinstance(message.params, dict) else {}
        path = params.get("arguments", {}).get("path")
        if path:
            exited = Path(f"{path}.exited")
            if exited.exists():  # noqa: ASYNC240 - one stat
                return  # one worker per path exits: the one that takes over survives
            # The process ends on the next line: nothing else on this loop can be held up.
            exited.write_text(str(os.getpid()), encoding="utf-8")  # noqa: ASYNC240
        os._exit(EXIT_CODE)


BrokerWorkerSource._run_call = _run_call_then_exit  # type: ignore[method-assign]
