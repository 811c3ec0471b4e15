"""The KubeRay example: its YAML parses, carries what KubeRay requires, and fits together.

No Kubernetes here: the checks are the ones a typo would fail - the fields KubeRay's
CRDs require, the bus configuration inside the ConfigMap (raybus's own parser), and the
names and ports that tie the RayCluster, the RayJob and the Service to each other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from ray._raylet import node_labels_match_selector  # type: ignore[attr-defined]

from cluster.config import BusConfig, parse_config

HERE = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"


def documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(HERE.glob("*.yaml")):
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return docs


def one(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in documents() if doc["kind"] == kind]
    return found


def bus_config() -> BusConfig:
    return parse_config(yaml.safe_load(one("ConfigMap")["data"]["bus.yaml"]), "ConfigMap")


def groups() -> list[dict[str, Any]]:
    spec = one("RayCluster")["spec"]
    return [spec["headGroupSpec"], *spec["workerGroupSpecs"]]


def test_every_document_parses_and_names_its_kind() -> None:
    kinds = sorted(doc["kind"] for doc in documents())
    assert kinds == ["ConfigMap", "RayCluster", "RayJob", "Service"]
    for doc in documents():
        assert doc["apiVersion"], doc["kind"]
        assert doc["metadata"]["name"], doc["kind"]


def test_the_raycluster_has_what_kuberay_requires() -> None:
    cluster = one("RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    # The example's Ray is the one raybus is tested with.
    assert cluster["spec"]["rayVersion"] == ray.__version__
    names = [g["groupName"] for g in cluster["spec"]["workerGroupSpecs"]]
    assert len(names) == len(set(names))
    assert all(names)
    for group in groups():
        assert isinstance(group["rayStartParams"], dict)
        # KubeRay passes rayStartParams, resources and labels on as strings.
        for field in ("rayStartParams", "resources", "labels"):
            assert all(isinstance(v, str) for v in group.get(field, {}).values()), field
        containers = group["template"]["spec"]["containers"]
        assert containers
        assert all(c["name"] and c["image"] for c in containers)
        assert ray.__version__ in containers[0]["image"]
    for group in cluster["spec"]["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_the_bus_configuration_is_valid_and_safe_to_expose() -> None:
    config = bus_config()
    assert config.gateway.host == "0.0.0.0"
    assert config.gateway.policy.tokens, "a gateway beyond loopback needs tokens"


def test_every_pool_needing_a_resource_or_labels_has_a_worker_group_offering_them() -> None:
    offered = [
        ({k: float(v) for k, v in g.get("resources", {}).items()}, g.get("labels", {}))
        for g in one("RayCluster")["spec"]["workerGroupSpecs"]
    ]
    limited = [p for p in bus_config().pools if p.resources or p.label_selector]
    assert limited, "the example shows a pool placed by resources and labels"
    for pool in limited:
        assert any(
            all(resources.get(name, 0) >= need for name, need in pool.resources.items())
            and node_labels_match_selector(labels, dict(pool.label_selector))
            for resources, labels in offered
        ), f"no worker group can host pool {pool.name!r}"


def test_the_rayjob_runs_raybus_up_on_that_cluster_with_the_mounted_config() -> None:
    cluster_name = one("RayCluster")["metadata"]["name"]
    job = one("RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster_name}
    command = job["spec"]["entrypoint"].split()
    assert command[:2] == ["raybus", "up"]
    assert command[command.index("--address") + 1] == "auto"
    head = one("RayCluster")["spec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in head["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v["configMap"]["name"] for v in head["volumes"]}
    (mounted,) = [mounts[name] for name, cm in volumes.items() if cm == "raybus-config"]
    assert command[2] == f"{mounted}/bus.yaml"
    assert one("ConfigMap")["metadata"]["name"] == "raybus-config"


@pytest.mark.parametrize("group", range(len(groups())))
def test_the_service_reaches_the_gateway_port_on_every_node(group: int) -> None:
    port = bus_config().gateway.port
    service = one("Service")
    assert service["spec"]["selector"] == {"ray.io/cluster": one("RayCluster")["metadata"]["name"]}
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port]
    containers = groups()[group]["template"]["spec"]["containers"]
    assert port in [p["containerPort"] for p in containers[0]["ports"]]
