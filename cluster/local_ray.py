"""Starting a Ray of its own on this machine: ``raybus up``, ``raybus demo``, the bench.

``address="local"`` always starts a new Ray: a bare ``ray.init()`` would join whatever
local Ray started last (another bus's, a notebook's), so unrelated buses would share one
cluster and its CPUs, and Ray refuses ``num_cpus`` when joining.

One setting differs from Ray's defaults, for start time only. The raylet starts its
object store on a thread and then connects to it; when the store's socket is not yet
listening, the connect sleeps ``raylet_client_connect_timeout_milliseconds`` before it
retries. At Ray's 1000 ms, half of the starts on a 2-core machine lost a whole second
there (six ``ray.init`` runs: three at 3.2 s, three at 2.2 s; the raylet's log shows the
second between the store's start and its object manager's). 100 ms x 100 attempts keeps
Ray's budget of 10 s before it gives up; six runs then took 2.0-2.2 s.

The head is lean: it starts without three of Ray's head processes that serve nothing
on the way to serving. With ``include_dashboard=False`` Ray still starts its API server
(it loads only the usage-stats module, and usage stats are off) and ``ray.init`` polls
every 0.1 s until it has registered, before the raylet even starts; the log monitor
forwards worker output to drivers, which ``log_to_driver=False`` turns off. Without them
and the autoscaler's monitor the demo's start went from 5.50-5.88 s to 5.01-5.24 s
(three interleaved pairs). The monitor is what ``ray status`` reads, so it is deferred,
not dropped: :func:`start_deferred_monitor` starts it once the bus serves (``raybus
up``; ``raybus demo`` and the bench run to their end with nobody to ask). Started with
the head it cost 0.2 s of the start on average (four interleaved pairs: 4.39-4.85 s with
it, 4.34-4.44 s without). Ray's ``ray.init`` offers no switch for any of this, so
:func:`start_local_ray` hands it a node class that skips them; where this Ray's
internals differ from what that needs, the start falls back to the full head (only
slower).

The same node class also watches for its raylet's registration. Ray's own check, once
the raylet is spawned, asks the GCS for the node and sleeps a whole second before asking
again (``GlobalStateAccessor::GetNode``); on 2 cores the first ask always came before the
raylet had registered (it waits ~0.45 s for its dashboard agent), so every start lost
most of that second. Polling every 20 ms first, Ray's check finds the node at once.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import time
from collections.abc import Iterator
from typing import Any

import ray

__all__ = [
    "LOCAL_RAY_SYSTEM_CONFIG",
    "lean_head_supported",
    "start_deferred_monitor",
    "start_local_ray",
]

logger = logging.getLogger(__name__)

_REGISTRATION_POLL_S = 0.02
_REGISTRATION_WAIT_S = 30.0  # Ray's own bound on a raylet's start (Node.__init__)
_GCS_CALL_TIMEOUT_S = 5.0

LOCAL_RAY_SYSTEM_CONFIG: dict[str, Any] = {
    "raylet_client_connect_timeout_milliseconds": 100,
    "raylet_client_num_connect_attempts": 100,
}


def start_local_ray(num_cpus: int | None, *, namespace: str | None = None) -> None:
    """Start a Ray of its own here, as every local bus runs (no dashboard, no log echo)."""
    with _lean_head():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            namespace=namespace,
            _system_config=LOCAL_RAY_SYSTEM_CONFIG,
        )


def start_deferred_monitor() -> None:
    """Start the autoscaler's monitor a lean head left out (what ``ray status`` reads).

    A no-op for any other Ray. Call it once the bus serves (off the start's way), and on
    the thread that started Ray and lives as long as it: Ray spawns the monitor to die
    with the thread that spawned it (``PR_SET_PDEATHSIG``), so from a passing executor
    thread it would end with that thread.
    """
    node = getattr(ray._private.worker, "_global_node", None)
    if node is None or not getattr(node, "monitor_deferred", False):
        return
    node.monitor_deferred = False
    try:
        node.start_monitor()
    except Exception as exc:  # noqa: BLE001 - the bus runs on; only `ray status` is poorer
        logger.warning("Ray's autoscaler monitor did not start (`ray status` is empty): %s", exc)


def _node_module() -> Any:
    import ray._private.node as node_module  # Ray's own, not a public API: checked below

    return node_module


def lean_head_supported() -> bool:
    """Does this Ray's head node have the parts :func:`_lean_head` replaces?"""
    try:
        node_class = _node_module().Node
        from ray._private.parameter import RayParams
    except (ImportError, AttributeError):
        return False
    methods = ("start_api_server", "start_ray_processes", "get_gcs_client", "start_monitor")
    if not all(callable(getattr(node_class, name, None)) for name in methods):
        return False
    try:
        params = inspect.signature(RayParams.__init__).parameters
        node_params = list(inspect.signature(node_class.__init__).parameters)
        api_server = inspect.signature(node_class.start_api_server).parameters
    except (TypeError, ValueError):
        return False
    return (
        isinstance(getattr(node_class, "node_id", None), property)
        and {"no_monitor", "include_log_monitor"} <= set(params)
        and node_params[1:3] == ["ray_params", "head"]
        and "include_dashboard" in api_server
    )


@contextlib.contextmanager
def _lean_head() -> Iterator[None]:
    # ray.init builds its head as ``ray._private.node.Node(ray_params, head=True, ...)``
    # at call time; for that one call it builds this subclass instead.
    if not lean_head_supported():
        logger.debug("this Ray's head differs from what a lean start needs: full head")
        yield
        return
    node_module = _node_module()
    full_node = node_module.Node

    class LeanHead(full_node):  # type: ignore[misc, valid-type]
        def __init__(self, ray_params: Any, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("head", args[0] if args else False):
                ray_params.include_log_monitor = False
                ray_params.no_monitor = True
                self.monitor_deferred = True
            super().__init__(ray_params, *args, **kwargs)

        def start_api_server(self, *args: Any, **kwargs: Any) -> None:
            if args or kwargs.get("include_dashboard"):  # asked for (or unknown): Ray's own
                super().start_api_server(*args, **kwargs)

        def start_ray_processes(self) -> None:
            super().start_ray_processes()
            _await_registration(self)

    node_module.Node = LeanHead
    try:
        yield
    finally:
        node_module.Node = full_node


def _await_registration(node: Any) -> None:
    """Return once ``node``'s raylet is registered alive in the GCS (or never will be).

    Whatever goes wrong here (the raylet exits, the GCS does not answer, the bound
    passes, this Ray's internals differ) only ends the wait: Ray's own check that
    follows reports it as it would.
    """
    try:
        alive = _gcs_pb2().GcsNodeInfo.ALIVE
        client = node.get_gcs_client()
        deadline = time.monotonic() + _REGISTRATION_WAIT_S
        while time.monotonic() < deadline and _raylet_running(node):
            nodes = client.get_all_node_info(timeout=_GCS_CALL_TIMEOUT_S)
            for node_id, info in nodes.items():
                if node_id.hex() == node.node_id and info.state == alive:
                    return
            # Polling another process's state, bounded: the GCS offers no wait for it here.
            time.sleep(_REGISTRATION_POLL_S)  # noqa: TID251
    except Exception:  # Ray's own check after this one reports it
        logger.debug("could not watch the raylet's registration", exc_info=True)


def _gcs_pb2() -> Any:
    return importlib.import_module("ray.core.generated.gcs_pb2")  # no type stubs


def _raylet_running(node: Any) -> bool:
    from ray._private import ray_constants

    started = node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET) or []
    return bool(started) and all(p.process.poll() is None for p in started)
