"""Case 10 (with case 12's audit count): a real gateway under hostile clients.

The gateway is the one ``raybus up`` runs, a ``GatewayReplica`` Ray actor serving
uvicorn over a real bus (``running_gateway``), so its memory is measured where it lives:
the replica's process, apart from this test's load generator. The suite sends every
kind of bad request (``HOSTILE``) and an oversized body, holds slow connections
(slowloris), and resets thousands of connections at every stage of a request, on
127.0.0.1. Each request must get a clear answer (``tests.faults.answers``), the next
valid call must succeed, the replica must neither restart nor log a traceback, its
resident memory must stay bounded and come back to its baseline, and its audit file
must hold exactly one record per request it answered or refused.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.cluster.bus_helpers import bus_config, running_gateway
from tests.faults.answers import malformation
from tests.faults.figures import figure
from tests.faults.gateway_clients import (
    HOSTILE,
    Ledger,
    audit_records,
    call_body,
    gateway_process,
    post,
    reset_after,
)
from tests.faults.scale import scaled

pytestmark = [pytest.mark.ray, pytest.mark.slow]

KIT = {"name": "kit", "server": "cluster.examples.testkit:server"}
MAX_BODY = 64 * 1024
RESETS = scaled(ci=10_000, soak=50_000)
SLOW_CLIENTS = scaled(ci=200, soak=2_000)
READ_TIMEOUT_S = 2.0  # the gateway's request_read_timeout_s here (30 s by default)
# Memory while under attack and after it. Freed objects do not give resident memory back
# (the allocator keeps partly used arenas for reuse), so "back to baseline" is judged on
# the blocks Python holds, and resident memory must not grow again when the same attack
# comes twice. What stays for a while is the SSE replay window: an initialize served
# before its client reset keeps its events for RESUME_WINDOW_S (cluster/gateway/event_store.py).
PEAK_GROWTH_MIB = 200
KEPT_BLOCKS = 1.12  # live blocks after the attack, as a share of the baseline (seen: 1.04-1.08)
SECOND_ROUND_GROWTH_MIB = 15
# Shorter than the default 30 s: the settling waits for it twice; how long it is does not
# change what must come back (BoundedEventStore's expiry is unit-tested with a clock).
RESUME_WINDOW_S = 3.0
SETTLE_S = 120  # the replay window and idle sessions' expiry, on a loaded machine

INITIALIZE = (
    b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":'
    b'"2025-11-25","capabilities":{},"clientInfo":{"name":"rude","version":"1"}}}'
)


def _head(port: int, length: int, extra: str = "") -> bytes:
    return (
        f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Accept: application/json, text/event-stream\r\n{extra}Content-Length: {length}\r\n\r\n"
    ).encode()


async def _echo(http: httpx.AsyncClient, url: str, ledger: Ledger, text: str) -> None:
    answer = ledger.saw(await post(http, url, call_body("echo", {"text": text}, request_id=text)))
    assert answer.status == 200, answer
    assert answer.final()["id"] == text
    assert answer.structured() == {"result": text}


async def _resets(port: int, count: int) -> dict[str, int]:
    """``count`` connections reset at every stage: before, inside and after a request."""
    stages = {
        "nothing sent": b"",
        "headers cut short": _head(port, len(INITIALIZE))[:40],
        "body cut short": _head(port, len(INITIALIZE)) + INITIALIZE[: len(INITIALIZE) // 2],
        "whole request": _head(port, len(INITIALIZE)) + INITIALIZE,
    }
    plan = [list(stages.values())[n % len(stages)] for n in range(count)]

    def run(share: list[bytes]) -> None:
        for data in share:
            reset_after(port, data)

    workers = 4  # a few clients at once, as a burst of rude clients would be
    await asyncio.gather(*(asyncio.to_thread(run, plan[w::workers]) for w in range(workers)))
    return {label: count // len(stages) for label in stages}


async def test_hostile_clients_get_clear_answers_and_cost_the_gateway_nothing_lasting(
    ray_session: None, tmp_path: Path
) -> None:
    audit_path = tmp_path / "audit.jsonl"
    config = bus_config(
        [KIT],
        gateway={
            "max_body_bytes": MAX_BODY,
            # A whole initialize reset before its answer may still open a session: the
            # server's to expire, so expire idle sessions quickly here.
            "session_idle_timeout_s": 3,
            "request_read_timeout_s": READ_TIMEOUT_S,
            "resume_window_s": RESUME_WINDOW_S,
            "policy": {"audit_path": str(audit_path)},
        },
    )
    ledger = Ledger()
    report: dict[str, Any] = {}
    async with running_gateway(config) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        replica = await gateway_process(config.name)
        async with httpx.AsyncClient(timeout=60) as http:
            for n in range(20):  # warm: imports, catalogs, the worker's first calls
                await _echo(http, url, ledger, f"warm-{n}")
            baseline = await replica.collected_resident_mib()
            baseline_blocks = await replica.collected_blocks()
            with replica.peak_resident() as samples:
                # Every hostile request, each followed by a valid call that must succeed.
                surprises = []
                for case in HOSTILE:
                    answer = ledger.saw(await post(http, url, case.body, case.headers))
                    problem = malformation(answer.status, answer.content_type, answer.body)
                    final = answer.final() if answer.messages else {}
                    code = final.get("error", {}).get("code")
                    if (
                        problem is not None
                        or case.status not in (None, answer.status)
                        or case.code not in (None, code)
                    ):
                        surprises.append((case.label, problem, answer.status, answer.body[:200]))
                    await _echo(http, url, ledger, f"after {case.label}")
                assert not surprises, "\n".join(map(str, surprises))
                oversized = call_body("echo", {"text": "x" * MAX_BODY})
                answer = ledger.saw(await post(http, url, oversized))
                assert answer.status == 413, answer
                await _echo(http, url, ledger, "after an oversized body")

                # Slow clients (slowloris) stop inside their head or their body and
                # hold the connection; valid calls are served meanwhile, and each slow
                # client is told 408 once the read deadline passes.
                slow = [
                    asyncio.create_task(_slow_client(port, inside_head=n % 2 == 0))
                    for n in range(SLOW_CLIENTS)
                ]
                for n in range(10):
                    await _echo(http, url, ledger, f"beside slow clients {n}")
                started = time.monotonic()
                async with asyncio.timeout(READ_TIMEOUT_S + 60):
                    answers = await asyncio.gather(*slow)
                report["slow_clients_answered_s"] = round(time.monotonic() - started, 1)
                for n, said in enumerate(answers):
                    assert said.startswith(b"HTTP/1.1 408 "), said[:300]
                    if n % 2:  # a body refused by the app: the door audits it
                        assert b'"code": -32600' in said, said[:300]
                        ledger.requests += 1
                await _echo(http, url, ledger, "after the slow clients")

                started = time.monotonic()
                report["resets"] = await _resets(port, RESETS)
                report["resets_s"] = round(time.monotonic() - started, 1)
                await _echo(http, url, ledger, "after the resets")
            peak = max(samples)
            # Sessions opened by reset initializes expire (3 s), their replay events
            # leave after the resume window: what the gateway holds comes back to its baseline.
            await _settle(replica, baseline_blocks, report)
            report["after_first_round_mib"] = round(replica.resident_mib(), 1)
            # The same attack again reuses what the first one left to the allocator. A leak
            # grows every round; the allocator now and then keeps a one-off step (seen once:
            # +20 MiB on a loaded fresh clone), so a second round past the bound gets a
            # third, which must then stay within it.
            after = [report["after_first_round_mib"]]
            for _ in range(2):
                await _resets(port, RESETS)
                await _settle(replica, baseline_blocks, report)
                after.append(round(replica.resident_mib(), 1))
                if after[-1] <= after[-2] + SECOND_ROUND_GROWTH_MIB:
                    break
            report["later_rounds_mib"] = after[1:]
            await _echo(http, url, ledger, "at the end")
        assert (await gateway_process(config.name)).pid == replica.pid  # never restarted
        log = replica.log_text()
    records = audit_records(audit_path)  # complete: the replica flushed it on stop
    report |= {
        "baseline_mib": round(baseline, 1),
        "peak_mib": round(peak, 1),
        "baseline_blocks": baseline_blocks,
        "requests": ledger.requests,
        "audit_records": len(records),
    }
    figure(f"case 10/12 figures: {report}")
    assert "Traceback" not in log, log[-3000:]
    assert peak <= baseline + PEAK_GROWTH_MIB, report
    assert after[-1] <= after[-2] + SECOND_ROUND_GROWTH_MIB, report
    # A whole initialize reset after sending may or may not have been served before the
    # reset arrived: such requests are the only ones whose count the client cannot know.
    served_resets = [r for r in records if r.get("method") == "initialize"]
    assert len(served_resets) <= 2 * report["resets"]["whole request"]  # two rounds
    # Likewise a body cut short by a reset the gateway, starved on a loaded machine, did
    # not see before the body's deadline: refused 408 like the slow bodies (half of the
    # slow clients), which the ledger counted.
    body_timeouts = sum(1 for r in records if r.get("outcome") == "refused 408 body_timeout")
    late_resets = body_timeouts - SLOW_CLIENTS // 2
    report["resets_refused_408"] = late_resets
    assert 0 <= late_resets <= 2 * report["resets"]["body cut short"], report
    assert len(records) - len(served_resets) - late_resets == ledger.requests, report


async def _slow_client(port: int, *, inside_head: bool) -> bytes:
    """Send part of a request (head or body), then wait for what the gateway says."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = _head(port, len(INITIALIZE))
        writer.write(head[:30] if inside_head else head + INITIALIZE[:10])
        await writer.drain()
        return await reader.read()  # until the gateway closes the connection
    finally:
        writer.close()


async def _settle(replica: Any, baseline_blocks: int, report: dict[str, Any]) -> None:
    settled: list[int] = []

    async def near_baseline() -> bool:
        settled.append(await replica.collected_blocks())
        return settled[-1] <= baseline_blocks * KEPT_BLOCKS

    try:
        await _wait_async(near_baseline, timeout_s=SETTLE_S)
    except TimeoutError:
        pytest.fail(f"memory stayed up: {baseline_blocks} blocks, then {settled[::10]}, {report}")
    report.setdefault("settled_blocks", []).append(settled[-1])


async def _wait_async(condition: Any, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110 - the replica's memory has no event
            await asyncio.sleep(0.5)  # polling the replica's memory from outside
