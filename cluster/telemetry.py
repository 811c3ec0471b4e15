"""Installing an OpenTelemetry SDK in the bus's own processes, from one variable.

raybus's code depends on ``opentelemetry-api`` only: its spans record wherever an SDK
is installed. In a notebook or driver that is the user's business
(``trace.set_tracer_provider``). The bus's actors (router, workers, gateway replicas)
run in processes the user does not write, so each of them installs one at start when
``RAYBUS_OTEL_EXPORTER`` is set in its environment:

* ``console`` - spans as JSON on the process's stdout (Ray's worker logs);
* ``otlp`` - OTLP over HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (default
  ``http://localhost:4318``), with the SDK's other ``OTEL_*`` variables as usual;
* ``file:/absolute/path.jsonl`` - one JSON span per line, appended (every process of
  the node may share one file: each span is one append of one line).

An environment variable, against the rule that actors take their configuration as
arguments, because this is how OpenTelemetry itself is configured (``OTEL_*``): the
same Ray ``runtime_env`` (a pool's ``runtime_env.env_vars``, or the job's) then carries
the exporter, its endpoint, headers and sampling together. A process that already has
an SDK keeps it. The SDK and exporters are optional dependencies:
``pip install 'raybus[tracing]'``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider

from transports.errors import BusError

__all__ = ["EXPORTER_VARIABLE", "TracingSetupError", "check_exporter", "install_tracing"]

logger = logging.getLogger(__name__)

EXPORTER_VARIABLE: Final = "RAYBUS_OTEL_EXPORTER"
_FILE_PREFIX: Final = "file:"
_OTLP_MODULE: Final = "opentelemetry.exporter.otlp.proto.http"


class TracingSetupError(BusError):
    """``RAYBUS_OTEL_EXPORTER`` names something this process cannot set up."""

    def __init__(self, value: str, reason: str) -> None:
        super().__init__(value, reason)
        self.value = value
        self.reason = reason

    def __str__(self) -> str:
        return f"{EXPORTER_VARIABLE}={self.value!r}: {self.reason}"


def check_exporter(value: str, *, packages: bool = False) -> None:
    """Check a ``RAYBUS_OTEL_EXPORTER`` value; with ``packages``, that what it needs
    is installed in this environment too.

    Raises:
        TracingSetupError: not ``console``, ``otlp`` or ``file:<absolute path>``; or a
            package it needs is missing (the message names it).
    """
    if value.startswith(_FILE_PREFIX):
        if not os.path.isabs(value[len(_FILE_PREFIX) :]):
            raise TracingSetupError(value, "the file must be an absolute path")
    elif value not in ("console", "otlp"):
        raise TracingSetupError(value, "expected console, otlp or file:/absolute/path.jsonl")
    if not packages:
        return
    needed = [("opentelemetry.sdk", "opentelemetry-sdk")]
    if value == "otlp":
        needed.append((_OTLP_MODULE, "opentelemetry-exporter-otlp-proto-http"))
    for module, package in needed:
        if importlib.util.find_spec(module) is None:
            raise TracingSetupError(value, f"needs {package} (pip install 'raybus[tracing]')")


def install_tracing(role: str, environ: Mapping[str, str] | None = None) -> bool:
    """Install an SDK exporting this process's spans, as ``RAYBUS_OTEL_EXPORTER`` says.

    ``role`` (router, worker, gateway) names the service (``raybus-<role>``) unless
    ``OTEL_SERVICE_NAME`` does. Returns whether an SDK was installed: not when the
    variable is unset or empty, nor when the process has one already.

    Raises:
        TracingSetupError: a malformed value, or the SDK / the OTLP exporter is not
            installed (the message says which package), or the file cannot be opened.
    """
    env = os.environ if environ is None else environ
    value = env.get(EXPORTER_VARIABLE, "").strip()
    if not value:
        return False
    check_exporter(value, packages=True)
    if not isinstance(trace.get_tracer_provider(), ProxyTracerProvider | NoOpTracerProvider):
        logger.info("an OpenTelemetry SDK is installed already: %s ignored", EXPORTER_VARIABLE)
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes: dict[str, Any] = {"raybus.role": role}
    if "OTEL_SERVICE_NAME" not in env:
        attributes["service.name"] = f"raybus-{role}"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(_exporter(value)))
    trace.set_tracer_provider(provider)
    logger.info("OpenTelemetry spans of this %s go to %s", role, value)
    return True


def _exporter(value: str) -> Any:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    if value == "console":
        return ConsoleSpanExporter()
    if value == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    path = value[len(_FILE_PREFIX) :]
    try:
        # Line-buffered appends: one span, one line, one write.
        out = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - the process's
    except OSError as exc:
        raise TracingSetupError(value, f"cannot open the file: {exc.strerror}") from None
    return ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
