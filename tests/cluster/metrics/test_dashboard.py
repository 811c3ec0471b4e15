"""examples/grafana/raybus.json plots the metrics raybus exports, under either name."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cluster.metrics import catalog
from cluster.metrics.registry import MetricKind, MetricSpec

DASHBOARD = Path(__file__).resolve().parents[3] / "examples" / "grafana" / "raybus.json"
_METRIC = re.compile(r"\$\{metric_prefix\}_(\w+)")


def exported() -> dict[str, MetricSpec]:
    specs = [v for v in vars(catalog).values() if isinstance(v, MetricSpec)]
    return {spec.name.removeprefix("raybus_"): spec for spec in specs}


def targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for p in dashboard["panels"] for t in p.get("targets", [])]


def test_every_query_names_an_exported_metric_and_every_metric_is_plotted() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    specs = exported()
    plotted = set()
    for target in targets(dashboard):
        for name in _METRIC.findall(target["expr"]):
            base = name.removesuffix("_bucket")
            assert base in specs, f"{target['expr']} names no metric raybus exports"
            if name != base:
                assert specs[base].kind is MetricKind.HISTOGRAM
            plotted.add(base)
    assert plotted == set(specs) - {"metrics_source_up"}


def test_queries_use_the_prometheus_datasource_variable_and_the_bus_filter() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    prefixes = {o["value"] for o in variables["metric_prefix"]["options"]}
    assert prefixes == {"raybus", "ray_raybus"}  # raybus up's page, Ray's endpoint
    for target in targets(dashboard):
        assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert 'bus=~"$bus"' in target["expr"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
