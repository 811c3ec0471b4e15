"""A bus's own local Ray starts lean: no API server, log monitor or autoscaler monitor.

They serve nothing on the way to serving and held the start back (cluster.local_ray).
The Ray must still run work, start the monitor (what `ray status` reads) when asked once
the bus serves, and stop whole.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import cluster.local_ray as local_ray

_PROBE = """
import json, psutil, ray
from cluster.local_ray import lean_head_supported, start_deferred_monitor, start_local_ray

def commands():
    return [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]

start_local_ray(1)

@ray.remote
class Echo:
    def echo(self, text):
        return text

answer = ray.get(Echo.remote().echo.remote("lean"), timeout=60)
at_start = commands()
start_deferred_monitor()
start_deferred_monitor()  # once only
later = commands()
tree = psutil.Process().children(recursive=True)
ray.shutdown()
gone, alive = psutil.wait_procs(tree, timeout=30)
print(json.dumps({"supported": lean_head_supported(), "answer": answer,
                  "at_start": at_start, "later": later, "alive": [p.pid for p in alive]}))
"""
# Ray starts these head processes from its own scripts; the lean head starts none.
_API_SERVER = "ray/dashboard/dashboard.py"
_LOG_MONITOR = "ray/_private/log_monitor.py"
_MONITOR = "ray/autoscaler/_private/monitor.py"


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
    at_start, later = report["at_start"], report["later"]
    assert any("raylet" in c for c in at_start), at_start

    def running(script: str, commands: list[str]) -> int:
        return sum(script in c for c in commands)

    assert running(_API_SERVER, at_start) == 0, "the API server was started"
    assert running(_LOG_MONITOR, at_start) == 0, "the log monitor was started"
    assert running(_MONITOR, at_start) == 0, "the monitor was started with the head"
    assert running(_MONITOR, later) == 1, "the deferred monitor did not start (once)"
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


class _Process:
    def __init__(self, exit_code: int | None) -> None:
        self.exit_code = exit_code

    def poll(self) -> int | None:
        return self.exit_code


class _Started:
    def __init__(self, exit_code: int | None) -> None:
        self.process = _Process(exit_code)


class _NodeId:
    def __init__(self, hex_id: str) -> None:
        self._hex = hex_id

    def hex(self) -> str:
        return self._hex


class _Info:
    def __init__(self, state: int) -> None:
        self.state = state


class _Gcs:
    """Answers ``get_all_node_info`` from a script: a dict of nodes, or an error."""

    def __init__(self, answers: list[dict[_NodeId, _Info] | Exception]) -> None:
        self.answers = answers
        self.asked = 0

    def get_all_node_info(self, timeout: float) -> dict[_NodeId, _Info]:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


class _Node:
    node_id = "aa"

    def __init__(self, gcs: _Gcs, raylet_exit_code: int | None = None) -> None:
        from ray._private import ray_constants

        self._gcs = gcs
        self.all_processes = {ray_constants.PROCESS_TYPE_RAYLET: [_Started(raylet_exit_code)]}

    def get_gcs_client(self) -> _Gcs:
        return self._gcs


def test_the_registration_wait_ends_when_the_raylet_is_alive_in_the_gcs() -> None:
    states = local_ray._gcs_pb2().GcsNodeInfo
    alive, dead = _Info(states.ALIVE), _Info(states.DEAD)
    gcs = _Gcs([{}, {_NodeId("bb"): alive, _NodeId("aa"): dead}, {_NodeId("aa"): alive}])
    local_ray._await_registration(_Node(gcs))
    assert gcs.asked == 3  # not before its own node was there, alive


def test_the_registration_wait_leaves_failures_to_rays_own_check() -> None:
    # A raylet that exited never registers, and a GCS that does not answer cannot say:
    # either ends the wait at once, and Ray's check after it reports the failure.
    never = _Gcs([{}])
    local_ray._await_registration(_Node(never, raylet_exit_code=1))
    assert never.asked == 0
    failing = _Gcs([RuntimeError("GCS unavailable")])
    local_ray._await_registration(_Node(failing))
    assert failing.asked == 1
    # A Ray whose node keeps its processes elsewhere: no wait, and no error either.
    unasked = _Gcs([{}])
    changed = _Node(unasked)
    del changed.all_processes
    local_ray._await_registration(changed)
    assert unasked.asked == 0


def test_the_deferred_monitor_is_left_alone_on_any_other_ray(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Ray joined by address (`raybus up --address`), or started in full: its node has
    # no deferred monitor, so nothing is started.
    import ray

    class Node:
        def start_monitor(self) -> None:
            raise AssertionError("started a monitor on a Ray that has its own")

    monkeypatch.setattr(ray._private.worker, "_global_node", Node(), raising=False)
    local_ray.start_deferred_monitor()
    monkeypatch.setattr(ray._private.worker, "_global_node", None, raising=False)
    local_ray.start_deferred_monitor()
