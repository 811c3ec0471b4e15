"""Pytest plugin: the real services a test session needs, started once and on demand.

- ``kafka_bootstrap``: ``host:port`` of a real Apache Kafka broker.
- ``sqs_endpoint``: URL of a real SQS endpoint (moto server).
- ``keycloak_gateway``: a real OAuth authorization server (Keycloak) whose realms
  (``tests/cluster/gateway/oauth_realm.py``) mint tokens for a gateway on a port reserved
  for the session.
- ``secure_kafka``: a second, separate Kafka broker with TLS (mutual) and SASL_SSL +
  SCRAM-SHA-512 (and unsecured OAUTHBEARER) listeners, certificates made by the test;
  started only by the tests that ask for it.
- ``ray_session``: the session's local Ray.
- ``unique_name``: a fresh topic/queue name per test, so tests never read each other's data.

The broker fixtures reuse a running service named by ``RAYBUS_KAFKA_BOOTSTRAP`` /
``RAYBUS_SQS_ENDPOINT`` (e.g. from ``raybus services up``) and otherwise start their own,
which they stop at the end of the session; they never stop what they did not start.
Session fixtures are lazy: ``pytest -m unit`` starts nothing. When a test that used a
service fails, its report carries the tail of that service's log.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest

from cluster.services.base import LocalService
from cluster.services.kafka import KAFKA_BOOTSTRAP_ENV, KafkaService
from cluster.services.kafka_secure import SecureKafkaService
from cluster.services.keycloak import KeycloakService
from cluster.services.process import free_port, log_tail
from cluster.services.sqs import SQS_ENDPOINT_ENV, SqsService
from cluster.services.state import default_cache_dir
from tests.tls_material import TlsFiles, write_tls_files

RAY_NAMESPACE = "raybus-tests"
_LOG_TAIL_LINES = 80

# fixture name -> log file of the service it started, for failure reports
_SERVICE_LOGS = pytest.StashKey[dict[str, Path]]()


def pytest_configure(config: pytest.Config) -> None:
    # A SIGTERM (a CI timeout, `kill`) would end pytest without running session teardown,
    # leaving the brokers and Keycloak it started running, in their own sessions. Taken
    # like Ctrl-C instead, pytest stops the run and the fixtures stop what they started.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def _service_logs(config: pytest.Config) -> dict[str, Path]:
    return config.stash.setdefault(_SERVICE_LOGS, {})


def _run_service(service: LocalService, config: pytest.Config, fixture: str) -> Iterator[str]:
    # asyncio.run: these are sync session fixtures, set up outside any test's event loop.
    asyncio.run(service.start())
    logs = _service_logs(config)
    if service.log_path is not None:
        logs[fixture] = service.log_path
    try:
        yield service.endpoint
    finally:
        logs.pop(fixture, None)
        asyncio.run(service.stop())


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    """``host:port`` of a real Kafka broker: ``$RAYBUS_KAFKA_BOOTSTRAP`` or one started here."""
    existing = os.environ.get(KAFKA_BOOTSTRAP_ENV)
    if existing:
        yield existing
        return
    yield from _run_service(KafkaService(default_cache_dir()), request.config, "kafka_bootstrap")


@dataclass(frozen=True)
class SecureKafka:
    """The secured broker: its listeners, the certificates and a SCRAM user."""

    plaintext_bootstrap: str
    ssl_bootstrap: str
    sasl_ssl_bootstrap: str
    tls: TlsFiles
    username: str
    password: str


@pytest.fixture(scope="session")
def secure_kafka(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SecureKafka]:
    """A Kafka broker of its own with TLS and SASL turned on (never the shared one)."""
    tls = write_tls_files(tmp_path_factory.mktemp("kafka-tls"))
    username, password = "raybus-app", secrets.token_urlsafe(18)
    service = SecureKafkaService(
        default_cache_dir(),
        keystore_pem=tls.server_keystore,
        scram_users={username: password},
        client_ca_pem=tls.ca,
        unsecured_oauthbearer=True,
    )
    for plaintext in _run_service(service, request.config, "secure_kafka"):
        yield SecureKafka(
            plaintext_bootstrap=plaintext,
            ssl_bootstrap=service.ssl_bootstrap,
            sasl_ssl_bootstrap=service.sasl_ssl_bootstrap,
            tls=tls,
            username=username,
            password=password,
        )


@pytest.fixture(scope="session")
def sqs_endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a real SQS endpoint: ``$RAYBUS_SQS_ENDPOINT`` or a moto server started here."""
    existing = os.environ.get(SQS_ENDPOINT_ENV)
    if existing:
        yield existing
        return
    yield from _run_service(SqsService(), request.config, "sqs_endpoint")


@pytest.fixture(scope="session")
def keycloak_gateway(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """Keycloak's base URL, and the gateway port its tokens are for (their audience).

    Its realms name the gateway's URL, so the port is reserved for the session: the OAuth
    tests serve their gateways on it, one after the other.
    """
    from tests.cluster.gateway.oauth_realm import realms

    port = free_port()
    service = KeycloakService(
        default_cache_dir(), realms=realms(f"http://127.0.0.1:{port}/mcp"), ready_timeout_s=360
    )
    for url in _run_service(service, request.config, "keycloak_gateway"):
        yield url, port


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray for the whole session (2 CPUs, no dashboard), reused if already up.

    Worker output is not forwarded to the driver (``log_to_driver=False``): it would land
    in whichever test happens to run, and failures already carry the remote traceback.
    """
    import ray  # here, so sessions that need no Ray never import it

    started = False
    if not ray.is_initialized():
        # The session's own Ray, never one another process left on the machine.
        from cluster.local_ray import start_local_ray

        start_local_ray(2, namespace=RAY_NAMESPACE)
        started = True
    yield
    if started:
        ray.shutdown()


@pytest.fixture
def unique_name() -> str:
    """A topic/queue name no other test uses (valid for Kafka topics and SQS queues)."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the log tail of every service a failed test used to its report."""
    report = yield
    if report.failed:
        used = set(getattr(item, "fixturenames", ()))
        for fixture, path in _service_logs(item.config).items():
            if fixture in used:
                report.sections.append(
                    (f"{fixture}: last lines of {path}", log_tail(path, _LOG_TAIL_LINES))
                )
    return report
