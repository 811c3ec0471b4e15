"""Processes that do not host MCP never load the MCP SDK, nor a bus start the broker clients.

Each Ray actor is its own process, and the SDK costs over a second of imports on two
cores: loaded by the control actors and the CLI that starts the bus, it delayed
``raybus up`` by seconds. Only the gateway and the workers hosting an SDK server object
(or a remote server) need it; a worker hosting a command speaks MCP to it on our codec.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

LIGHT_MODULES = [
    "cluster.ray_actors.router",
    "cluster.ray_actors.discovery",
    "cluster.ray_actors.autoscaler",
    "cluster.ray_actors.supervisor",
    "cluster.ray_actors.control",
    "cluster.ray_actors.ledger",
    "cluster.ray_actors.endpoint",
    "cluster.ray_actors.gateway",
    "cluster.ray_actors.trigger",
    "cluster.bus",
    "cluster.cli.up",
]


def _probe(code: str) -> str:
    """What ``code`` prints in a fresh interpreter: imports are per process."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip()


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_a_process_that_hosts_no_mcp_does_not_import_the_sdk(module: str) -> None:
    probe = (
        f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'mcp'))"
    )
    out = _probe(probe)
    assert out == "[]", f"{module} loads the MCP SDK: {out[:300]}"


def test_the_worker_still_loads_its_server_side_when_built() -> None:
    # The worker module defers the SDK to the actor's constructor; the names it needs
    # there must still resolve (a lazy import that no longer exists fails only at start).
    probe = (
        "import sys, cluster.ray_actors.worker as w; "
        "from actors.worker.core import WorkerCore, WorkerIdentity; "
        "from actors.worker.hosted_server import HostedServer; "
        "from actors.worker.server_links import StdioServerLink; "
        "from actors.worker.sdk_link import SdkServerLink, functions_server, load_server_object; "
        "from cluster.gateway.app import http_server; from cluster.gateway.server import Gateway; "
        "print('mcp' in sys.modules)"
    )
    out = _probe(probe)
    assert out == "True"


def test_a_worker_hosting_a_command_does_not_import_the_sdk() -> None:
    # Built as the actor builds it: the core, the hosted server and the command's link.
    # The child imports its own SDK; the worker loading one too only delayed its start.
    probe = (
        "import sys, cluster.ray_actors.worker as w; "
        "from actors.worker.core import WorkerCore, WorkerIdentity; "
        "from actors.worker.hosted_server import HostedServer; "
        "from cluster.config import BusConfig; "
        "pool = BusConfig.model_validate({'name': 'b', 'pools': [{'name': 'p', "
        "'command': ['python', '-m', 'cluster.examples.calculator']}]}).pools[0]; "
        "w.link_factory_for(pool)(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'mcp_types')))"
    )
    out = _probe(probe)
    assert out == "[]", f"a command's worker loads the MCP SDK: {out[:300]}"


# The broker clients' libraries (aioboto3 alone is ~0.2 s): loaded only where a bus uses
# that broker, never by the CLI or by the code that starts a bus on Ray.
BROKER_FREE_MODULES = ["cluster.cli", "cluster.bus", "cluster.triggers.launch"]


@pytest.mark.parametrize("module", BROKER_FREE_MODULES)
def test_starting_a_bus_does_not_import_the_broker_clients(module: str) -> None:
    probe = (
        f"import sys, {module}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aioboto3', 'aiokafka')))"
    )
    out = _probe(probe)
    assert out == "[]", f"{module} loads broker clients: {out[:300]}"


def test_the_trigger_actor_still_resolves_when_first_used() -> None:
    # Imported on first use (cluster.triggers.launch): the import must still resolve.
    probe = (
        "from cluster.triggers.launch import _trigger_actor; print(type(_trigger_actor()).__name__)"
    )
    out = _probe(probe)
    assert out == "ActorClass(TriggerActor)"
