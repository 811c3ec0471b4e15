"""Test-session wiring shared by every test package.

Tests carry at most one of the environment markers (ray, kafka, sqs); a test with none of
them is a `unit` test: pure logic, no Ray, no broker. Marking it here keeps
`pytest -m unit` an honest, fast subset.
"""

from __future__ import annotations

import pytest

# Session fixtures for real services: ray_session, kafka_bootstrap, sqs_endpoint.
pytest_plugins = ["tests.services_plugin"]

_ENVIRONMENT_MARKERS = frozenset({"ray", "kafka", "sqs"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not _ENVIRONMENT_MARKERS.intersection(m.name for m in item.iter_markers()):
            item.add_marker(pytest.mark.unit)
