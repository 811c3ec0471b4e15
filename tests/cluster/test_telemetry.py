"""RAYBUS_OTEL_EXPORTER: checked where the bus starts, before anything runs.

Installing an SDK changes the whole process for good (OpenTelemetry's global provider
is set once), so no test here installs one: the workers of
``test_tracing_backends.py`` do, in their own processes, and export to a file.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from cluster.cli.preflight import check_tracing
from cluster.config import ConfigError, parse_config
from cluster.telemetry import (
    EXPORTER_VARIABLE,
    TracingSetupError,
    check_exporter,
    install_tracing,
)


@pytest.mark.parametrize("value", ["console", "otlp", "file:/tmp/spans.jsonl"])
def test_the_three_exporters_are_accepted_and_their_packages_are_here(value: str) -> None:
    check_exporter(value, packages=True)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("jaeger", "expected console, otlp or file:/absolute/path.jsonl"),
        ("file:spans.jsonl", "the file must be an absolute path"),
        ("Console", "expected console, otlp or file:/absolute/path.jsonl"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(value: str, reason: str) -> None:
    with pytest.raises(TracingSetupError) as caught:
        check_exporter(value)
    assert str(caught.value) == f"{EXPORTER_VARIABLE}={value!r}: {reason}"
    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)


def test_a_missing_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec

    def without_otlp(name: str, *args: Any) -> Any:
        return None if name.startswith("opentelemetry.exporter.otlp") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_otlp)
    with pytest.raises(TracingSetupError, match="needs opentelemetry-exporter-otlp-proto-http"):
        check_exporter("otlp", packages=True)
    check_exporter("console", packages=True)


def test_without_the_variable_nothing_is_installed() -> None:
    assert install_tracing("worker", {}) is False
    assert install_tracing("worker", {EXPORTER_VARIABLE: "  "}) is False
    with pytest.raises(TracingSetupError, match="expected console"):
        install_tracing("worker", {EXPORTER_VARIABLE: "zipkin"})


def pool_with(env_vars: dict[str, str]) -> dict[str, Any]:
    return {
        "name": "kit",
        "tools": "cluster.examples.functions",
        "runtime_env": {"env_vars": env_vars},
    }


def test_a_pools_runtime_env_value_is_checked_with_the_config() -> None:
    where = r"pools\[0\]\.runtime_env\.env_vars: RAYBUS_OTEL_EXPORTER='x'"
    with pytest.raises(ConfigError, match=where):
        parse_config({"name": "t", "pools": [pool_with({EXPORTER_VARIABLE: "x"})]})
    parse_config({"name": "t", "pools": [pool_with({EXPORTER_VARIABLE: "console"})]})


def test_raybus_up_checks_its_own_environment_and_every_pools(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = parse_config({"name": "t", "pools": [pool_with({EXPORTER_VARIABLE: "otlp"})]})
    monkeypatch.setenv(EXPORTER_VARIABLE, "file:relative.jsonl")
    with pytest.raises(TracingSetupError, match="absolute path"):
        check_tracing(config)
    monkeypatch.setenv(EXPORTER_VARIABLE, "console")
    check_tracing(config)
