"""Test-session wiring shared by every test package.

Tests carry at most one of the environment markers (ray, kafka, sqs, keycloak); a test with none of
them is a `unit` test: pure logic, no Ray, no broker. Marking it here keeps
`pytest -m unit` an honest, fast subset.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import hypothesis  # noqa: F401 - see below
import pytest

# hypothesis's pytest plugin imports hypothesis lazily, at the end of a session that ran no
# property test; pytest then rewrites its modules that deep in the stack, where CPython
# 3.11.7's AST validator miscounts its recursion depth ("AST constructor recursion depth
# mismatch") and the session crashes after the tests ran. Importing it here, at the
# shallow depth of conftest loading, avoids that.

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# Session fixtures for real services (ray_session, kafka_bootstrap, sqs_endpoint), and how
# `make test` spreads the tests over pytest-xdist workers.
pytest_plugins = ["tests.services_plugin", "tests.xdist_groups"]

_ENVIRONMENT_MARKERS = frozenset({"ray", "kafka", "sqs", "keycloak"})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault suite's measured figures, so a CI log carries the evidence, not just a pass."""
    figures = sys.modules.get("tests.faults.figures")  # imported only when fault tests ran
    lines: list[str] = getattr(figures, "FIGURES", [])
    if lines:
        terminalreporter.section("fault figures")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not _ENVIRONMENT_MARKERS.intersection(m.name for m in item.iter_markers()):
            item.add_marker(pytest.mark.unit)


@pytest.fixture
def recorded_spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """raybus's spans in this process recorded in memory (an SDK of the test's own).

    Only raybus's tracer is swapped: the global provider stays unset, so the MCP SDK in
    this process (clients, servers) and every other test see no SDK at all.
    """
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    import actors.tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(actors.tracing, "_tracer", provider.get_tracer(actors.tracing.TRACER_NAME))
    return exporter
