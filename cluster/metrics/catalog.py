"""Every metric raybus exports, in one place: names, kinds, help and labels.

Names are those of ``raybus up --metrics-port``; on Ray's own Prometheus endpoint
``ray.util.metrics`` puts its ``ray_`` namespace in front (``ray_raybus_requests_total``).
Labels are few and bounded (STYLE.md): bus, pool, tool (from the pools' catalogs),
outcome, direction, reason - never a request id, a principal or a resource URI.
"""

from __future__ import annotations

from actors.router.breaker import BreakerState
from cluster.metrics.registry import MetricKind, MetricSpec

__all__ = [
    "BREAKER_STATE",
    "BREAKER_STATE_VALUE",
    "GATEWAY_REFUSED",
    "LATENCY_BUCKETS_S",
    "POOL_LAG",
    "POOL_WORKERS",
    "REQUESTS",
    "REQUEST_LATENCY",
    "SCALING_DECISIONS",
    "SOURCE_UP",
    "TRIGGER_IN_FLIGHT",
    "TRIGGER_LAG",
    "TRIGGER_RECORDS",
    "TRIGGER_RETRIES",
]

# From a cached echo (~1 ms) to the pools' default deadline (300 s).
LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)

REQUESTS = MetricSpec(
    "raybus_requests_total",
    MetricKind.COUNTER,
    "Calls that ended, by pool, tool (the method for non-tool calls) and outcome: counted "
    "by the router (Ray backend) or by the worker that ran them (Kafka, SQS).",
    ("pool", "tool", "outcome"),
)
REQUEST_LATENCY = MetricSpec(
    "raybus_request_latency_seconds",
    MetricKind.HISTOGRAM,
    "Seconds from the router receiving a call to its worker finishing it, queue included "
    "(Ray backend); from a worker starting it to publishing its answer (Kafka, SQS: the "
    "broker's queue is raybus_pool_lag).",
    ("pool",),
    LATENCY_BUCKETS_S,
)
BREAKER_STATE = MetricSpec(
    "raybus_breaker_state",
    MetricKind.GAUGE,
    "Each pool's circuit breaker: 0 closed, 1 half-open, 2 open.",
    ("pool",),
)
POOL_WORKERS = MetricSpec(
    "raybus_pool_workers",
    MetricKind.GAUGE,
    "Workers serving the pool (started, not retiring), as its supervisor keeps them.",
    ("pool",),
)
POOL_LAG = MetricSpec(
    "raybus_pool_lag",
    MetricKind.GAUGE,
    "Calls waiting for a worker (router queue, Kafka group lag or SQS depth), as the "
    "supervisor read it last.",
    ("pool",),
)
SCALING_DECISIONS = MetricSpec(
    "raybus_scaling_decisions_total",
    MetricKind.COUNTER,
    "Autoscaler decisions, one per pool per round: up, down or hold.",
    ("pool", "direction"),
)
GATEWAY_REFUSED = MetricSpec(
    "raybus_gateway_refused_total",
    MetricKind.COUNTER,
    "Requests the gateway refused before the bus saw them, by reason.",
    ("reason",),
)
SOURCE_UP = MetricSpec(
    "raybus_metrics_source_up",
    MetricKind.GAUGE,
    "1 if the actor answered this scrape of raybus up --metrics-port, else 0.",
    ("source",),
)
TRIGGER_RECORDS = MetricSpec(
    "raybus_trigger_records_total",
    MetricKind.COUNTER,
    "Records a trigger settled (acknowledged), by outcome: ok (output written), skipped "
    "(the map gave None), mapping_failed, call_failed or output_failed (dead-lettered).",
    ("trigger", "outcome"),
)
TRIGGER_RETRIES = MetricSpec(
    "raybus_trigger_retries_total",
    MetricKind.COUNTER,
    "Calls a trigger made again after a refusal that ran nothing (overloaded, breaker "
    "open, draining, rate limited).",
    ("trigger",),
)
TRIGGER_IN_FLIGHT = MetricSpec(
    "raybus_trigger_in_flight",
    MetricKind.GAUGE,
    "Records a trigger holds and has not settled (at most max_in_flight per replica).",
    ("trigger",),
)
TRIGGER_LAG = MetricSpec(
    "raybus_trigger_lag",
    MetricKind.GAUGE,
    "Records on the trigger's source not yet consumed (Kafka group lag, SQS depth), as its "
    "first replica read it last.",
    ("trigger",),
)

BREAKER_STATE_VALUE = {
    BreakerState.CLOSED: 0.0,
    BreakerState.HALF_OPEN: 1.0,
    BreakerState.OPEN: 2.0,
}
