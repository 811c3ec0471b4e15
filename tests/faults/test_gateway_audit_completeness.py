"""Case 12: exactly one audit record per request while a worker is killed under load.

Callers send unique-keyed 2026-07-28 ``tools/call`` requests of ``echo`` through a real
gateway (a ``GatewayReplica`` with an audit file) to a pool of two workers; between
calls they send hostile requests (``HOSTILE``) that the door or the SDK refuses. A third
of the way in, one worker is killed. The shared checker must find nothing lost, crossed,
hung or duplicated, and the audit file must hold exactly as many records as the
gateway answered or refused requests.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import ray

from cluster.naming import actor_names, get_actor
from tests.cluster.bus_helpers import bus_config, running_gateway
from tests.faults.figures import figure
from tests.faults.gateway_clients import HOSTILE, Ledger, audit_records, call_body, post
from tests.faults.history import History, check
from tests.faults.scale import scaled
from tests.waiting import wait_until
from transports.errors import BusErrorCode

pytestmark = [pytest.mark.ray, pytest.mark.slow]

KIT = {"name": "kit", "server": "cluster.examples.testkit:server"}
CALLS = scaled(ci=300, soak=3_000)
CALLERS = 8
HOSTILE_EVERY = 3  # one hostile request after every third call
DEADLINE_S = 30.0
# What a caller may be told when its worker is killed: the call may have run (1004),
# or the worker was going away (1006) or failed (1007). Anything else is a defect.
ACCEPTABLE = {
    BusErrorCode.OUTCOME_UNKNOWN,
    BusErrorCode.SHUTTING_DOWN,
    BusErrorCode.UPSTREAM_FAILED,
}


def _result_text(structured: Any) -> Any:
    return structured.get("result") if isinstance(structured, dict) else structured


async def test_every_request_leaves_exactly_one_audit_record_while_a_worker_is_killed(
    ray_session: None, tmp_path: Path
) -> None:
    audit_path = tmp_path / "audit.jsonl"
    config = bus_config(
        [{**KIT, "min_workers": 2, "max_workers": 2}],
        gateway={"policy": {"audit_path": str(audit_path)}},
    )
    history = History()
    ledger = Ledger()
    finished = 0
    kill: dict[str, float] = {}
    async with running_gateway(config) as url:
        supervisor = get_actor(actor_names.supervisor(config.name))
        victim = (await supervisor.workers.remote())["kit"][0]
        limits = httpx.Limits(max_connections=CALLERS * 2)
        async with httpx.AsyncClient(timeout=DEADLINE_S * 2, limits=limits) as http:

            async def request(key: str) -> Any:
                body = call_body("echo", {"text": key}, request_id=key)
                return ledger.saw(await post(http, url, body)).structured()

            async def caller(number: int) -> None:
                nonlocal finished
                for n in range(number, CALLS, CALLERS):
                    await history.call(
                        number, request, deadline_s=DEADLINE_S, answer_of=_result_text
                    )
                    finished += 1
                    if n % HOSTILE_EVERY == 0:
                        case = HOSTILE[n % len(HOSTILE)]
                        ledger.saw(await post(http, url, case.body, case.headers))

            async def killer() -> None:
                await wait_until(lambda: finished >= CALLS // 3, timeout_s=300)
                kill["at"] = time.monotonic()
                ray.kill(get_actor(victim), no_restart=True)

            await asyncio.gather(killer(), *(caller(c) for c in range(CALLERS)))
    verdict = check(history)
    records = audit_records(audit_path)  # complete: the replica flushed it on stop
    affected = [
        op.outcomes[0][2] - kill["at"]
        for op in history.operations.values()
        if op.outcomes and op.outcomes[0][0] == "error" and op.invoked_at < kill["at"]
    ]
    figure(
        f"\ncase 12 figures: {verdict}; requests {ledger.requests}, audit records "
        f"{len(records)}; affected callers answered within "
        f"{max(affected, default=0.0):.2f} s of the kill"
    )
    assert verdict.clean, verdict
    assert set(verdict.errors) <= ACCEPTABLE, verdict
    assert len(records) == ledger.requests
