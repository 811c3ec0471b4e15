"""The Ray router under router.regions, with fake ports and clocks: a labelled call runs
in its region; when that region's pool cannot serve (breaker open, or no worker for
failover_after_s) the call fails over only along router.regions.failover, else 1010."""

from __future__ import annotations

from dataclasses import dataclass

from actors.discovery.catalog import Catalog
from actors.discovery.registry import DiscoveryRegistry, Heartbeat, ServerStatus
from actors.router.breaker import BreakerConfig
from actors.router.core import Completion, RouterConfig, RouterCore
from actors.router.regions import RegionPolicy
from tests.actors.fakes import FakeClock, RecordingRouterPorts
from transports.envelope import Envelope
from transports.frame import Frame
from transports.labels import with_labels
from transports.message import Request, Response

CALC = Catalog.of(tools=[{"name": "add", "inputSchema": {"type": "object"}}])


@dataclass(frozen=True)
class Pool:
    name: str
    labels: dict[str, str]
    min_workers: int = 1


POOLS = [Pool("calc-eu", {"region": "eu"}), Pool("calc-us", {"region": "us"})]


def beat(pool: str, worker: str) -> Heartbeat:
    return Heartbeat(worker, pool, worker, ServerStatus.ONLINE, 0, CALC.digest, 4, CALC)


def setup(
    failover: dict[str, list[str]] | None = None,
) -> tuple[RouterCore, RecordingRouterPorts, FakeClock, DiscoveryRegistry]:
    policy = RegionPolicy(failover=failover or {}, failover_after_s=30).derived(POOLS)
    clock = FakeClock()
    registry = DiscoveryRegistry(ttl_s=5, clock=clock, regions=policy.pool_regions)
    registry.heartbeat(beat("calc-eu", "eu-1"))
    registry.heartbeat(beat("calc-us", "us-1"))
    ports = RecordingRouterPorts()
    config = RouterConfig(regions=policy, breaker=BreakerConfig(minimum_calls=2))
    core = RouterCore(config, ports, clock=clock, wall_clock=clock)
    core.apply_membership(registry.snapshot())
    return core, ports, clock, registry


def call(n: int, region: str | None) -> Frame:
    envelope = Envelope(client_id="c", request_id=str(n), method="tools/call", name="add")
    if region is not None:
        envelope = with_labels(envelope, {"region": region})
    return Frame.of(envelope, Request(id=n, method="tools/call", params={"name": "add"}))


def refusal_of(ports: RecordingRouterPorts) -> dict[str, object]:
    (frame,) = ports.replies
    response = frame.decode()
    assert isinstance(response, Response)
    assert response.error is not None
    assert response.error.code == 1010
    assert isinstance(response.error.data, dict)
    return response.error.data


def test_labelled_calls_run_in_their_region_and_unlabelled_ones_at_the_owner() -> None:
    core, ports, _, _ = setup()
    core.submit([call(1, "us"), call(2, "eu"), call(3, None)])
    assert [f.envelope.request_id for f in ports.delivered_to("us-1")] == ["1"]
    assert [f.envelope.request_id for f in ports.delivered_to("eu-1")] == ["2", "3"]


def test_a_region_without_workers_for_failover_after_s_is_unavailable() -> None:
    core, ports, clock, registry = setup()
    clock.advance(10)
    registry.heartbeat(beat("calc-us", "us-1"))
    registry.evict_stale()  # eu-1 stopped beating: gone; calc-eu keeps its catalog
    core.apply_membership(registry.snapshot())
    core.submit([call(1, "eu")])  # recently had a worker: queued, as today (it may return)
    assert ports.replies == []
    clock.advance(31)
    core.tick()  # the queued call stays queued for its deadline; new ones are refused
    core.submit([call(2, "eu")])
    assert refusal_of(ports) == {"region": "eu", "tool": "add", "reason": "unavailable"}
    assert ports.delivered_to("us-1") == []


def test_failover_takes_a_regions_calls_while_its_breaker_is_open() -> None:
    core, ports, _, _ = setup(failover={"eu": ["us"]})
    core.submit([call(1, "eu"), call(2, "eu")])
    core.completed("eu-1", [Completion(("anonymous", "c", str(n)), True, 0.1) for n in (1, 2)])
    core.submit([call(3, "eu"), call(4, "us")])
    assert [f.envelope.request_id for f in ports.delivered_to("us-1")] == ["3", "4"]
    assert ports.replies == []


def test_without_failover_an_open_breaker_refuses_the_regions_calls_with_1010() -> None:
    core, ports, _, _ = setup()
    core.submit([call(1, "eu"), call(2, "eu")])
    core.completed("eu-1", [Completion(("anonymous", "c", str(n)), True, 0.1) for n in (1, 2)])
    core.submit([call(3, "eu")])
    assert refusal_of(ports) == {"region": "eu", "tool": "add", "reason": "unavailable"}
    assert [f.envelope.request_id for f in ports.delivered_to("us-1")] == []
