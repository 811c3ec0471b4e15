"""raybus's metrics: recorded in-process by each actor, exported two ways.

- ``registry``: counters, gauges, histograms as plain numbers (no Ray), with snapshots.
- ``catalog``: every metric raybus exports (names, help, labels).
- ``recorders``: what the router, the autoscaler and the gateway record.
- ``ray_export``: forwards registries to ``ray.util.metrics`` (Ray's Prometheus endpoint).
- ``exposition``: snapshots as Prometheus text.
- ``endpoint``: ``/metrics`` of ``raybus up --metrics-port``, fed by ``sources``.

This package imports nothing eagerly: the gateway imports the registry without Ray.
"""
