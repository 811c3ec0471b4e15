"""What metrics cost per call: ``python -m benchmarks.metrics_overhead [--records N]``.

Each figure is ``time.perf_counter`` over N records (100,000 by default), the best of
several interleaved rounds (a shared machine's noise only ever adds time), in
microseconds per record:

* the registry's counter ``inc`` and histogram ``observe`` (the in-process store);
* the router's metrics work per call, alone: the call's label and outcome, its tally
  entries, and its share of one ``RouterRecorder.calls_ended`` per batch of 64;
* a broker worker's metrics work per call, alone (Kafka, SQS: no router sees the call):
  its two clock readings, the call's label, its outcome from the server's response, its
  tally entries, and its share of the ``CallRecorder.calls_ended`` the worker makes of
  the tally every second (counted here once per batch of 64, more than it pays);
* the router's hot path with the recorder against the same path with a port that drops
  tallies (``RouterCore`` submit + completed, 64 calls a batch, fake ports), beside it
  for scale. The clock moves 1 ms a reading and the breaker's window is 0.5 ms, so the
  breaker's scan of its window (which grows with the call rate) does not drown it;
* ``ray.util.metrics`` ``Counter.inc`` per record, for comparison (what recording
  straight into Ray per message would cost), and a ``RayExport`` flush per observation
  replayed (paid in the background every second, not by the call).

No Ray is started: Ray's metric objects record without a cluster.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

from actors.discovery.catalog import Catalog
from actors.discovery.registry import DiscoveryRegistry, Heartbeat, ServerStatus
from actors.router.breaker import BreakerConfig
from actors.router.core import Completion, RouterConfig, RouterCore
from actors.router.outcomes import CallTally, call_label
from actors.worker.core import completion_of
from cluster.metrics.catalog import REQUEST_LATENCY, REQUESTS
from cluster.metrics.ray_export import RayExport, RayMetricSinks
from cluster.metrics.recorders import CallRecorder, RouterRecorder
from cluster.metrics.registry import MetricsRegistry
from transports.envelope import CorrelationKey, Envelope
from transports.frame import Frame
from transports.message import Request, Response

__all__ = ["main", "measure"]

_BATCH = 64
_ROUNDS = 5


def measure(records: int) -> dict[str, float]:
    """Microseconds per record of each figure (best of the rounds)."""
    best: dict[str, float] = {}
    for _ in range(_ROUNDS):
        for name, run in _figures().items():
            seconds = run(records)
            best[name] = min(best.get(name, float("inf")), seconds / records * 1e6)
    return best


def _figures() -> dict[str, Callable[[int], float]]:
    return {
        "registry: counter inc": _counter_inc,
        "registry: histogram observe": _histogram_observe,
        "router: metrics work per call": _router_metrics_work,
        "broker worker: metrics work per call": _broker_worker_metrics_work,
        "router: call, tallies dropped": lambda n: _router_calls(n, measured=False),
        "router: call, tallies recorded": lambda n: _router_calls(n, measured=True),
        "ray.util.metrics: Counter.inc": _ray_counter_inc,
        "RayExport: flush per observation": _ray_flush,
    }


def _counter_inc(records: int) -> float:
    counter = MetricsRegistry("bench").counter(REQUESTS)
    labels = ("kit", "echo", "ok")
    started = time.perf_counter()
    for _ in range(records):
        counter.inc(labels)
    return time.perf_counter() - started


def _histogram_observe(records: int) -> float:
    histogram = MetricsRegistry("bench").histogram(REQUEST_LATENCY)
    labels = ("kit",)
    started = time.perf_counter()
    for i in range(records):
        histogram.observe(labels, (i % 1000) / 1000)
    return time.perf_counter() - started


def _router_metrics_work(records: int) -> float:
    recorder = RouterRecorder(MetricsRegistry("bench"))
    done = Completion(("p", "c", "1"), False, 0.001)
    started = time.perf_counter()
    tally = CallTally()
    for i in range(records):
        tool = call_label("tools/call", "echo")  # at submit
        tally.add("kit", tool, done.outcome)  # at completion
        tally.latency("kit", 0.001)
        if i % _BATCH == _BATCH - 1:
            recorder.calls_ended(tally)
            tally = CallTally()
    recorder.calls_ended(tally)
    return time.perf_counter() - started


def _broker_worker_metrics_work(records: int) -> float:
    # What BrokerWorkerSource._run_call adds for metrics, then the worker's drain.
    recorder = CallRecorder(MetricsRegistry("bench"))
    envelope = Envelope("c", "1", method="tools/call", name="echo")
    response = Response.success(1, {"content": [], "isError": False})
    key = envelope.correlation_key
    started = time.perf_counter()
    tally = CallTally()
    for i in range(records):
        began = time.monotonic()
        tool = call_label(envelope.method, envelope.name)
        took_s = time.monotonic() - began
        tally.add("kit", tool, completion_of(key, response, took_s).outcome)
        tally.latency("kit", took_s)
        if i % _BATCH == _BATCH - 1:
            recorder.calls_ended(tally)
            tally = CallTally()
    recorder.calls_ended(tally)
    return time.perf_counter() - started


class _NullPorts:
    def deliver(self, worker: str, frames: list[Frame]) -> None:
        pass

    def cancel(self, worker: str, keys: list[CorrelationKey]) -> None:
        pass

    def reply(self, frames: list[Frame]) -> None:
        pass

    def breaker_opened(self, worker: str) -> None:
        pass


def _router_calls(records: int, *, measured: bool) -> float:
    recorder = RouterRecorder(MetricsRegistry("bench")) if measured else None
    ticks = itertools.count()
    core = RouterCore(
        RouterConfig(breaker=BreakerConfig(window_s=0.0005)),
        _NullPorts(),
        clock=lambda: next(ticks) * 0.001,
        metrics=recorder,
    )
    catalog = Catalog.of(tools=[{"name": "echo", "inputSchema": {"type": "object"}}])
    registry = DiscoveryRegistry(ttl_s=60)
    registry.heartbeat(
        Heartbeat("s1", "kit", "w1", ServerStatus.ONLINE, 0, catalog.digest, _BATCH, catalog)
    )
    core.apply_membership(registry.snapshot())
    body = Frame.of(Envelope(), Request(id=1, method="tools/call", params={"name": "echo"})).body
    batches = [
        [
            Frame(Envelope("c", f"{b}-{i}", method="tools/call", name="echo"), body)
            for i in range(_BATCH)
        ]
        for b in range(records // _BATCH)
    ]
    started = time.perf_counter()
    for frames in batches:
        core.submit(frames)
        core.completed("w1", [Completion(f.envelope.correlation_key, False, 0.001) for f in frames])
    return (time.perf_counter() - started) * records / (len(batches) * _BATCH)


def _ray_counter_inc(records: int) -> float:
    from ray.util.metrics import Counter as RayCounter

    counter = RayCounter("raybus_bench_calls", "bench", ("bus", "pool", "tool", "outcome"))
    tags = {"bus": "bench", "pool": "kit", "tool": "echo", "outcome": "ok"}
    started = time.perf_counter()
    for _ in range(records):
        counter.inc(1, tags)
    return time.perf_counter() - started


def _ray_flush(records: int) -> float:
    registry = MetricsRegistry("bench")
    registry.histogram(REQUEST_LATENCY).observe_many(
        ("kit",), ((i % 1000) / 1000 for i in range(records))
    )
    export = RayExport(registry, RayMetricSinks())
    started = time.perf_counter()
    export.flush()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    args = parser.parse_args()
    for name, micros in measure(args.records).items():
        print(f"{name:40s} {micros:8.3f} us")


if __name__ == "__main__":
    main()
