"""Pytest plugin: how ``pytest -n N --dist loadscope`` (``PYTEST_WORKERS=N make test``)
spreads the suite over pytest-xdist workers.

Every xdist worker has its own session fixtures: its own Ray, and its own Kafka, SQS
endpoint and Keycloak if its tests ask for them. So each service's tests go to one worker,
which starts that service (a JVM for Kafka and for Keycloak: 20-70 s of CPU) once for the
run, not once per worker; every other test goes with its module, so a module's shared bus
starts once. Units are handed out longest first: the service groups, then the modules on
Ray, then the quick unit modules that fill the gaps at the end; one long unit handed out
last would run alone at the end.

It is ``--dist loadscope`` with our units as its scopes. xdist's ``--dist loadgroup``
(``xdist_group`` marks) cannot do this: it renames each item's node id, which has no
effect under pytest 9 (the marks are silently ignored). Only the workers see the markers
and only the controller schedules, so each worker writes the unit of every test it
collected to a file the controller reads when it splits the work.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

SERVICE_GROUPS = ("kafka", "sqs", "keycloak")
_UNITS_DIR_KEY = "raybus_work_units_dir"  # in each worker's workerinput
_UNITS_DIR = pytest.StashKey[Path]()  # in the controller's config


def work_unit(item: pytest.Item) -> tuple[int, str]:
    """The rank (lower is handed out first) and name of the unit ``item`` runs in."""
    names = {mark.name for mark in item.iter_markers()}
    for rank, service in enumerate(SERVICE_GROUPS):
        if service in names:
            return rank, service
    module = item.nodeid.split("::", 1)[0]
    return (len(SERVICE_GROUPS) if "ray" in names else len(SERVICE_GROUPS) + 1), module


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker: sort ``items`` longest unit first and record each one's unit."""
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is None or _UNITS_DIR_KEY not in workerinput:
        return
    units = {item.nodeid: work_unit(item) for item in items}
    items.sort(key=lambda item: units[item.nodeid][0])  # stable: modules stay in order
    folder = Path(workerinput[_UNITS_DIR_KEY])
    # Written whole, then renamed: the controller never reads half a file.
    staging = folder / f".{workerinput['workerid']}.json"
    staging.write_text(json.dumps({nodeid: unit for nodeid, (_, unit) in units.items()}))
    staging.rename(folder / f"{workerinput['workerid']}.json")


class ServiceAndModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist is untyped
    """xdist's scope scheduling with the units the workers recorded as the scopes."""

    def __init__(self, config: pytest.Config, units_dir: Path, log: Any = None) -> None:
        super().__init__(config, log)
        self._units_dir = units_dir
        self._units: dict[str, str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if self._units is None:  # first asked once every worker finished collecting
            self._units = {}
            for path in sorted(self._units_dir.glob("gw*.json")):
                self._units.update(json.loads(path.read_text()))
        return self._units.get(nodeid, nodeid.split("::", 1)[0])


def pytest_configure(config: pytest.Config) -> None:
    # In the controller of `pytest -n N --dist loadscope` (workers see --dist "no").
    workers = config.getoption("numprocesses", None)
    spreading = config.getoption("dist", "no") == "loadscope" and bool(workers)
    if spreading and not hasattr(config, "workerinput"):
        config.stash[_UNITS_DIR] = Path(tempfile.mkdtemp(prefix="raybus-xdist-units-"))
        config.option.loadscopereorder = False  # our order, not by number of tests


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_UNITS_DIR, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    folder = node.config.stash.get(_UNITS_DIR, None)
    if folder is not None:  # not under another --dist mode
        node.workerinput[_UNITS_DIR_KEY] = str(folder)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    folder = config.stash.get(_UNITS_DIR, None)
    if folder is None:
        return None
    return ServiceAndModuleScheduling(config, folder, log)
