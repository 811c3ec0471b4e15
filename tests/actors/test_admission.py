"""Workers refuse requests outside their region (1010) before their ledger or server see
them, on Ray (WorkerCore) and on brokers (BrokerWorkerSource); without Ray."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import cast

from actors.router.regions import RegionPolicy
from actors.worker.admission import ADMIT_ALL, admission_for
from actors.worker.core import WorkerCore, WorkerIdentity
from actors.worker.hosted_server import HostedServer
from cluster.backends.broker_source import BrokerWorkerSource, one_at_a_time
from tests.actors.fakes import RecordingWorkerPorts
from tests.cluster.backends.test_broker_source import Deliveries, FakeLedger, FakeServer, Remote
from transports.base import Delivery
from transports.codec import decode_message
from transports.envelope import Envelope
from transports.errors import BusErrorCode
from transports.frame import Frame
from transports.labels import with_labels
from transports.message import Request, Response


@dataclass(frozen=True)
class Pool:
    name: str
    labels: dict[str, str]
    min_workers: int = 1


POLICY = RegionPolicy(failover={"eu": ["us"]}).derived(
    [Pool("calc-eu", {"region": "eu"}), Pool("calc-us", {"region": "us"})]
)


def call(request_id: int, region: str | None) -> Frame:
    envelope = Envelope(
        client_id="c",
        request_id=str(request_id),
        reply_to="endpoint-c",
        method="tools/call",
        name="add",
    )
    if region is not None:
        envelope = with_labels(envelope, {"region": region})
    return Frame.of(envelope, Request(id=request_id, method="tools/call", params={"name": "add"}))


def test_a_pool_admits_its_own_region_its_failover_sources_and_unregioned_calls() -> None:
    eu, us = admission_for(POLICY, "calc-eu"), admission_for(POLICY, "calc-us")
    assert eu.refuse(call(1, "eu").envelope) is None
    assert us.refuse(call(2, "eu").envelope) is None  # failover {eu: [us]}
    assert us.refuse(call(3, None).envelope) is None  # require is off
    refusal = eu.refuse(call(4, "us").envelope)  # no failover us -> eu
    assert refusal is not None
    assert (refusal.code, refusal.data()) == (
        BusErrorCode.REGION_REFUSED,
        {"region": "us", "tool": "add", "reason": "outside"},
    )
    assert refusal.message == "region refused: pool 'calc-eu' may not run add of region 'us'"
    assert admission_for(None, "calc-eu") is ADMIT_ALL


def test_with_require_on_an_unregioned_call_is_refused_everywhere() -> None:
    strict = POLICY.model_copy(update={"require": True})
    refusal = admission_for(strict, "calc-eu").refuse(call(1, None).envelope)
    assert refusal is not None
    assert refusal.data()["reason"] == "no_region"


class RecordingHosted:
    """The server side of a worker: records every call that reaches it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def call(self, frame: Frame, timeout_s: float | None) -> Response:
        self.calls.append(frame.envelope.request_id)
        request = frame.decode()
        assert isinstance(request, Request)
        return Response.success(request.id, {"content": []})


async def test_a_ray_worker_answers_1010_for_a_foreign_region_and_its_server_sees_nothing() -> None:
    ports = RecordingWorkerPorts()
    hosted = RecordingHosted()
    worker = WorkerCore(
        WorkerIdentity("s1", "calc-us", "worker-1", capacity=4),
        cast(HostedServer, hosted),
        ports,
        admission=admission_for(POLICY.model_copy(update={"failover": {}}), "calc-us"),
    )
    worker.deliver([call(1, "eu"), call(2, "us")])
    replies = await ports.wait_for(Response, count=2)
    by_id = {cast(Response, f.decode()).id: cast(Response, f.decode()) for f in replies}
    refused = by_id[1].error
    assert refused is not None
    assert refused.code == BusErrorCode.REGION_REFUSED
    assert refused.data == {"region": "eu", "tool": "add", "reason": "outside"}
    assert by_id[2].error is None
    assert hosted.calls == ["2"]
    # The router hears the refusal ended the call, as an error and not a pool fault.
    refused_end = next(c for c in ports.completions if c.key[2] == "1")
    assert (refused_end.failed, refused_end.error_code) == (False, BusErrorCode.REGION_REFUSED)


class CountingLedger(FakeLedger):
    """A ledger that records the keys it was asked to begin."""

    def __init__(self) -> None:
        super().__init__(done=set(), held=set())
        self.asked: list[str] = []
        self.begin_many = Remote(self._begin_counted)

    def _begin_counted(self, keys: list[str]) -> list[tuple[str, bytes | None]]:
        self.asked += keys
        return [self._begin(key) for key in keys]


class RegionDeliveries(Deliveries):
    """Deliveries whose envelopes carry ``regions[request_id]``."""

    def __init__(self, calls: list[tuple[str, str]], regions: dict[str, str]) -> None:
        self._regions = regions
        super().__init__(calls, expired=set())

    def _delivery(self, i: int, tool: str, request_id: str) -> Delivery:
        delivery = super()._delivery(i, tool, request_id)
        if request_id in self._regions:
            labelled = with_labels(
                delivery.envelope or Envelope(), {"region": self._regions[request_id]}
            )
            delivery = replace(delivery, envelope=labelled)
        return delivery


async def test_a_broker_worker_refuses_before_its_ledger_is_asked() -> None:
    answers: dict[str, bytes] = {}

    async def publish(destination: str, body: bytes, envelope: Envelope) -> None:
        answers[envelope.request_id] = body

    deliveries = RegionDeliveries([("add", "eu-1"), ("add", "us-1")], {"eu-1": "eu", "us-1": "us"})
    ledger, server = CountingLedger(), FakeServer()
    source = BrokerWorkerSource(
        deliveries,
        one_at_a_time(publish),
        server,  # type: ignore[arg-type]
        ledger,
        pool="calc-us",
        capacity=4,
        call_timeout_s=5,
        duplicate_wait_s=0.2,
        admission=admission_for(POLICY.model_copy(update={"failover": {}}), "calc-us"),
    )
    await source.start()
    async with asyncio.timeout(10):
        await deliveries.all_acked.wait()  # the refused one is acknowledged: it is answered
    await source.stop(timeout_s=5)
    refused = decode_message(answers["eu-1"])
    assert isinstance(refused, Response)
    assert refused.error is not None
    assert refused.error.code == BusErrorCode.REGION_REFUSED
    assert server.called == ["us-1"]
    assert not any(key.endswith("eu-1") for key in ledger.asked)
    assert any(key.endswith("us-1") for key in ledger.asked)
    assert source.calls_ended().outcomes == {
        ("calc-us", "add", "error"): 1,
        ("calc-us", "add", "ok"): 1,
    }
