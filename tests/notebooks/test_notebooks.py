"""Every notebook in ``notebooks/`` runs top to bottom, at CI size, on the session's Ray.

Each notebook runs in a fresh Jupyter kernel (nbclient) with ``RAYBUS_NOTEBOOK_SCALE=ci``
(its small size) and ``RAY_ADDRESS`` of the session's Ray, so its ``ray.init()`` joins
that Ray instead of starting a second one on the same two cores. A notebook passes when
no cell raised, it ended with a plot, and its clean-up left no actor of a bus behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import nbformat
import pytest
import ray
from nbclient import NotebookClient

from cluster.bus import stop_bus
from cluster.naming import NAMESPACE

pytestmark = [pytest.mark.ray, pytest.mark.slow]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# Bounds sized for a cold, loaded 2-core machine; they stop a hang, they measure nothing.
CELL_TIMEOUT_S = 600
ACTORS_GONE_S = 60


def _bus_actors() -> set[str]:
    named = ray.util.list_named_actors(all_namespaces=True)
    return {a["name"] for a in named if a["namespace"] == NAMESPACE}


async def _new_bus_actors(before: set[str]) -> set[str]:
    return await asyncio.to_thread(_bus_actors) - before


async def _actors_gone(before: set[str]) -> set[str]:
    """Waits (bounded) for the bus actors started since ``before`` to go; returns the rest.

    ``ray.kill`` returns before the actor is gone from the registry.
    """
    left = await _new_bus_actors(before)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(ACTORS_GONE_S):
            while left:
                await asyncio.sleep(0.2)  # polling Ray's registry
                left = await _new_bus_actors(before)
    return left


async def run_notebook(name: str, **env: str) -> nbformat.NotebookNode:
    """Execute ``notebooks/<name>`` in a new kernel joined to the session's Ray.

    Whatever bus the notebook leaves running is stopped afterwards (so a failing notebook
    does not load the machine for the tests after it), and the test fails.
    """
    notebook: nbformat.NotebookNode = nbformat.read(  # type: ignore[no-untyped-call]
        NOTEBOOKS / name, as_version=4
    )
    kernel_env = {
        **os.environ,
        "RAYBUS_NOTEBOOK_SCALE": "ci",
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,
        **env,
    }
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    before = await asyncio.to_thread(_bus_actors)
    try:
        await client.async_execute(env=kernel_env)
    except BaseException:
        await _stop_buses(await _new_bus_actors(before))
        raise
    left = await _actors_gone(before)
    await _stop_buses(left)
    assert not left, f"{name} left bus actors running: {sorted(left)}"
    return notebook


async def _stop_buses(actors: set[str]) -> None:
    for bus in sorted({actor.split("/")[1] for actor in actors}):  # raybus/<bus>/...
        await stop_bus(bus)


def plots(notebook: nbformat.NotebookNode) -> list[str]:
    """The PNG images the notebook's cells displayed, base64-encoded."""
    return [
        output["data"]["image/png"]
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]


async def test_the_burst_notebook_runs_to_its_plot_and_stops_its_bus(ray_session: None) -> None:
    notebook = await run_notebook("burst.ipynb")
    assert plots(notebook), "burst.ipynb displayed no plot"


@pytest.mark.kafka
async def test_the_kafka_pool_notebook_runs_on_the_session_broker_to_its_plot(
    ray_session: None, kafka_bootstrap: str
) -> None:
    notebook = await run_notebook("kafka_pool.ipynb", RAYBUS_KAFKA_BOOTSTRAP=kafka_bootstrap)
    assert plots(notebook), "kafka_pool.ipynb displayed no plot"


async def test_the_batch_scoring_notebook_scores_every_row_both_ways_to_its_plot(
    ray_session: None,
) -> None:
    # The notebook itself asserts that both sides scored every row once, alike.
    notebook = await run_notebook("batch_scoring.ipynb")
    assert plots(notebook), "batch_scoring.ipynb displayed no plot"
