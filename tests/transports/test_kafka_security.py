"""Kafka client security settings: validated at load, one line per mistake, no secret shown."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError

from cluster.config import ConfigError, parse_config
from tests.tls_material import TlsFiles, write_tls_files
from tests.transports.token_endpoint import TokenEndpoint, serving
from transports.kafka.security import KafkaOAuth, KafkaSecurity

PASSWORD = "pw-that-must-never-show"
SCRAM = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "app",
    "sasl_password": PASSWORD,
}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return write_tls_files(tmp_path_factory.mktemp("tls"))


def problems_of(kafka: dict[str, Any]) -> list[str]:
    data = {
        "name": "b",
        "backend": "kafka",
        "kafka": {"bootstrap": "broker:9093", **kafka},
        "pools": [{"name": "p", "tools": "pkg.tools"}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    text = str(caught.value)
    assert PASSWORD not in text
    return caught.value.problems


@pytest.mark.parametrize(
    ("kafka", "expected"),
    [
        ({"security_protocol": "SASL_SSL"}, "kafka: sasl_mechanism is required"),
        ({"security_protocol": "TLS"}, "kafka.security_protocol: Input should be"),
        ({**SCRAM, "sasl_mechanism": "GSSAPI"}, "kafka.sasl_mechanism: Input should be"),
        ({**SCRAM, "sasl_username": None}, "kafka: sasl_password is set without sasl_username"),
        ({**SCRAM, "sasl_password": None}, "sasl_username and sasl_password are required"),
        ({"sasl_mechanism": "PLAIN"}, "kafka: sasl_mechanism needs security_protocol SASL_"),
        ({"security_protocol": "SSL", "ssl_cafile": "/no/such/ca.pem"}, "kafka.ssl_cafile: "),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"}, "sasl_oauth is"),
        (
            {**SCRAM, "sasl_mechanism": "OAUTHBEARER", "sasl_oauth": {"token": "t"}},
            "sasl_username is not used by OAUTHBEARER",
        ),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "OAUTHBEARER",
                "sasl_oauth": {"token_url": "https://idp.example/token", "client_id": "c"},
            },
            "kafka.sasl_oauth: client_secret missing",
        ),
    ],
)
def test_a_misconfiguration_is_one_line_naming_the_field(
    kafka: dict[str, Any], expected: str
) -> None:
    problems = problems_of(kafka)
    assert len(problems) == 1
    assert expected in problems[0]


def test_tls_files_on_a_plaintext_protocol_are_refused(tls: TlsFiles) -> None:
    (problem,) = problems_of({"ssl_cafile": str(tls.ca)})
    assert problem == "kafka: ssl_cafile needs security_protocol SSL or SASL_SSL"


def test_a_file_that_is_not_a_certificate_is_named_at_load(tls: TlsFiles, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    (problem,) = problems_of({"security_protocol": "SSL", "ssl_cafile": str(junk)})
    assert problem.startswith(f"kafka: ssl_cafile {str(junk)!r} does not load")
    (problem,) = problems_of(
        {"security_protocol": "SSL", "ssl_certfile": str(tls.client_cert), "ssl_keyfile": str(junk)}
    )
    assert "ssl_certfile" in problem
    assert "do not load" in problem


def test_a_password_is_read_from_the_environment_and_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAYBUS_TEST_KAFKA_PASSWORD", PASSWORD)
    config = parse_config(
        {
            "name": "b",
            "backend": "kafka",
            "kafka": {
                "bootstrap": "b:9093",
                **SCRAM,
                "sasl_password": "${RAYBUS_TEST_KAFKA_PASSWORD}",
            },
            "pools": [{"name": "p", "tools": "pkg.tools"}],
        }
    )
    assert config.kafka is not None
    security = config.kafka.security
    assert security.client_options()["sasl_plain_password"] == PASSWORD
    for shown in (repr(config), str(config.kafka), security.describe(), repr(security)):
        assert PASSWORD not in shown
    assert security.describe() == "SASL_SSL SCRAM-SHA-512 as 'app'"


def test_an_unset_variable_is_named() -> None:
    (problem,) = problems_of({**SCRAM, "sasl_password": "${RAYBUS_TEST_UNSET_VARIABLE}"})
    assert (
        problem == "kafka.sasl_password: environment variable RAYBUS_TEST_UNSET_VARIABLE is not set"
    )


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert KafkaSecurity().client_options() == {"security_protocol": "PLAINTEXT"}


def test_tls_options_carry_a_verifying_context_with_the_client_certificate(tls: TlsFiles) -> None:
    security = KafkaSecurity(
        security_protocol="SSL",
        ssl_cafile=str(tls.ca),
        ssl_certfile=str(tls.client_cert),
        ssl_keyfile=str(tls.client_key),
    )
    context = security.client_options()["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    lax = KafkaSecurity(security_protocol="SSL", ssl_check_hostname=False)
    assert not lax.ssl_context().check_hostname


@pytest.fixture
async def token_endpoint(request: pytest.FixtureRequest) -> AsyncIterator[TokenEndpoint]:
    async with serving(TokenEndpoint(*getattr(request, "param", (3600,)))) as endpoint:
        yield endpoint


def oauth(url: str) -> KafkaOAuth:
    return KafkaOAuth(token_url=url, client_id="raybus", client_secret="s3cret", scope="kafka")


async def test_client_credentials_are_fetched_once_and_reused(
    token_endpoint: TokenEndpoint,
) -> None:
    provider = oauth(token_endpoint.url).provider()
    async with asyncio.timeout(30):
        tokens = await asyncio.gather(*(provider.token() for _ in range(5)))
    assert tokens == ["token-1"] * 5
    ((authorization, form),) = token_endpoint.requests
    assert authorization.startswith("Basic ")
    assert "grant_type=client_credentials" in form
    assert "scope=kafka" in form


@pytest.mark.parametrize("token_endpoint", [(30,)], indirect=True)
async def test_a_token_close_to_expiry_is_fetched_again(token_endpoint: TokenEndpoint) -> None:
    provider = oauth(token_endpoint.url).provider()
    async with asyncio.timeout(30):
        first, second = await provider.token(), await provider.token()
    # 30 s of life is inside the renewal margin: no connection gets a token about to lapse.
    assert (first, second) == ("token-1", "token-2")


@pytest.mark.parametrize("token_endpoint", [(3600, 401)], indirect=True)
async def test_a_refused_token_request_is_one_line_without_the_secret(
    token_endpoint: TokenEndpoint,
) -> None:
    with pytest.raises(KafkaError) as caught:
        async with asyncio.timeout(30):
            await oauth(token_endpoint.url).provider().token()
    assert "HTTP 401" in str(caught.value)
    assert "s3cret" not in str(caught.value)


async def test_a_static_token_is_used_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYBUS_TEST_KAFKA_TOKEN", "a.b.c")
    source = KafkaOAuth.model_validate({"token": "${RAYBUS_TEST_KAFKA_TOKEN}"})
    assert await source.provider().token() == "a.b.c"
    assert "a.b.c" not in repr(source)


def test_loading_a_secured_kafka_configuration_imports_no_broker_client() -> None:
    # Every Ray actor loads the configuration; aiokafka costs ~0.25 s of each start.
    probe = (
        "import sys; from cluster.config import parse_config; parse_config({'backend': 'kafka',"
        " 'kafka': {'bootstrap': 'b:1', 'security_protocol': 'SASL_SSL',"
        " 'sasl_mechanism': 'OAUTHBEARER', 'sasl_oauth': {'token': 't'}},"
        " 'pools': [{'name': 'p', 'tools': 'pkg.tools'}]});"
        " print(sorted({m.split('.')[0] for m in sys.modules} & {'aiokafka', 'aioboto3'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
