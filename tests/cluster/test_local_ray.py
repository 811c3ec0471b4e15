"""A bus's own local Ray starts lean: no API server, autoscaler monitor or log monitor.

They serve nothing on one machine with the dashboard and log echo off, and cost the
start over a second of CPU (cluster.local_ray). The Ray must still run work, and stop
whole.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import cluster.local_ray as local_ray

_PROBE = """
import json, psutil, ray
from cluster.local_ray import lean_head_supported, start_local_ray

start_local_ray(1)

@ray.remote
class Echo:
    def echo(self, text):
        return text

answer = ray.get(Echo.remote().echo.remote("lean"), timeout=60)
tree = psutil.Process().children(recursive=True)
commands = [" ".join(p.cmdline()) for p in tree]
ray.shutdown()
gone, alive = psutil.wait_procs(tree, timeout=30)
print(json.dumps({"supported": lean_head_supported(), "answer": answer,
                  "commands": commands, "alive": [p.pid for p in alive]}))
"""
# Ray starts these head processes from its own scripts; the lean head starts none.
_SKIPPED = {
    "API server": "ray/dashboard/dashboard.py",
    "autoscaler monitor": "ray/autoscaler/_private/monitor.py",
    "log monitor": "ray/_private/log_monitor.py",
}


def test_a_local_ray_starts_without_the_head_processes_it_does_not_use() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # This Ray has what the lean start replaces (else it quietly runs the full head:
    # slower, and this test says so).
    assert report["supported"] is True
    assert report["answer"] == "lean"  # the raylet, GCS and an actor work without them
    commands = report["commands"]
    assert any("raylet" in c for c in commands), commands
    for name, script in _SKIPPED.items():
        assert not any(script in c for c in commands), f"the {name} was started"
    assert report["alive"] == [], "ray.shutdown() left processes behind"


def test_a_ray_without_those_parts_gets_the_full_head(monkeypatch: pytest.MonkeyPatch) -> None:
    node_module = local_ray._node_module()
    full_node = node_module.Node
    monkeypatch.setattr(local_ray, "lean_head_supported", lambda: False)
    with local_ray._lean_head():
        assert node_module.Node is full_node
    monkeypatch.undo()
    with local_ray._lean_head():
        assert node_module.Node is not full_node  # swapped for the one call only
    assert node_module.Node is full_node
