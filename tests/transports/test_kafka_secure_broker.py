"""The Kafka transport against a broker with TLS and SASL turned on (``secure_kafka``).

The broker is the project's own, started by the test session with certificates the test
made; it requires client certificates on its SSL listener and SCRAM-SHA-512 (or an
unsigned OAUTHBEARER token) on its SASL_SSL listener.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest

from tests.services_plugin import SecureKafka
from tests.transports.token_endpoint import TokenEndpoint, serving
from transports.errors import TransportError
from transports.kafka.admin import consumer_group_lag
from transports.kafka.security import KafkaSecurity
from transports.kafka.transport import KafkaTransport, KafkaTransportConfig
from transports.message import Request

pytestmark = pytest.mark.kafka

# A refused client must know within this; generous for a loaded 2-core machine, far
# below aiokafka's own retry horizon (request_timeout_ms * retries).
FAILS_WITHIN_S = 30.0


def scram(broker: SecureKafka, password: str | None = None) -> KafkaSecurity:
    return KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=broker.username,
        sasl_password=password if password is not None else broker.password,
        ssl_cafile=str(broker.tls.ca),
    )


def mutual_tls(broker: SecureKafka) -> KafkaSecurity:
    return KafkaSecurity(
        security_protocol="SSL",
        ssl_cafile=str(broker.tls.ca),
        ssl_certfile=str(broker.tls.client_cert),
        ssl_keyfile=str(broker.tls.client_key),
    )


def unsigned_jwt(subject: str) -> str:
    """What Kafka's unsecured OAUTHBEARER validator accepts (alg none): testing only."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    return f"{part({'alg': 'none'})}.{part({'sub': subject, 'iat': now, 'exp': now + 600})}."


def oauthbearer(broker: SecureKafka) -> KafkaSecurity:
    return KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_mechanism="OAUTHBEARER",
        sasl_oauth={"token": unsigned_jwt("raybus-app")},
        ssl_cafile=str(broker.tls.ca),
    )


def transport(bootstrap: str, security: KafkaSecurity, name: str, **options: Any) -> KafkaTransport:
    return KafkaTransport(
        KafkaTransportConfig(
            bootstrap=bootstrap,
            topic_prefix=f"{name}.",
            client_id=name,
            security=security,
            request_timeout_ms=int(FAILS_WITHIN_S * 1000),
            **options,
        )
    )


async def round_trip(bootstrap: str, security: KafkaSecurity, name: str) -> None:
    topic = f"{name}.requests"
    sender = transport(bootstrap, security, f"{name}-s", send_topic=topic)
    receiver = transport(
        bootstrap, security, f"{name}-r", receive_topics=(topic,), group_id=f"{name}-g"
    )
    sent = Request(id=7, method="tools/call", params={"name": "echo", "arguments": {"x": 1}})
    async with asyncio.timeout(120):
        async with receiver, sender:
            await sender.send(sent)
            delivery = await receiver.receive()
            assert delivery.message == sent
            await delivery.ack()
            lag = await consumer_group_lag(
                bootstrap, f"{name}-g", topic, security=security, timeout_s=60
            )
            assert lag == 0


async def test_a_request_travels_over_sasl_ssl_with_scram(
    secure_kafka: SecureKafka, unique_name: str
) -> None:
    await round_trip(secure_kafka.sasl_ssl_bootstrap, scram(secure_kafka), unique_name)


async def test_a_request_travels_over_mutual_tls(
    secure_kafka: SecureKafka, unique_name: str
) -> None:
    await round_trip(secure_kafka.ssl_bootstrap, mutual_tls(secure_kafka), unique_name)


async def test_a_request_travels_over_sasl_ssl_with_an_oauthbearer_token(
    secure_kafka: SecureKafka, unique_name: str
) -> None:
    await round_trip(secure_kafka.sasl_ssl_bootstrap, oauthbearer(secure_kafka), unique_name)


async def test_a_request_travels_with_oauthbearer_tokens_from_client_credentials(
    secure_kafka: SecureKafka, unique_name: str
) -> None:
    async with serving(TokenEndpoint(3600, mint=lambda n: unsigned_jwt(f"svc-{n}"))) as idp:
        security = KafkaSecurity(
            security_protocol="SASL_SSL",
            sasl_mechanism="OAUTHBEARER",
            sasl_oauth={"token_url": idp.url, "client_id": "raybus", "client_secret": "s"},
            ssl_cafile=str(secure_kafka.tls.ca),
        )
        await round_trip(secure_kafka.sasl_ssl_bootstrap, security, unique_name)
    # Each client fetched its token from the identity provider (and cached it).
    assert idp.requests


async def refusal(bootstrap: str, security: KafkaSecurity, name: str) -> str:
    """The one line a transport that cannot connect fails with, within the bound."""
    started = time.monotonic()
    with pytest.raises(TransportError) as caught:
        async with asyncio.timeout(FAILS_WITHIN_S + 15):
            await transport(bootstrap, security, name, send_topic=f"{name}.t").start()
    assert time.monotonic() - started < FAILS_WITHIN_S
    message = str(caught.value)
    assert "\n" not in message
    return message


async def test_a_wrong_password_fails_at_start_in_one_clear_line(
    secure_kafka: SecureKafka, unique_name: str
) -> None:
    wrong = "not-" + secure_kafka.password
    message = await refusal(
        secure_kafka.sasl_ssl_bootstrap, scram(secure_kafka, wrong), unique_name
    )
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in message
    assert wrong not in message
    assert secure_kafka.password not in message


async def test_a_plaintext_client_at_the_tls_listener_is_told_to_check_the_protocol(
    secure_kafka: SecureKafka, unique_name: str
) -> None:
    message = await refusal(secure_kafka.ssl_bootstrap, KafkaSecurity(), unique_name)
    assert "PLAINTEXT" in message
    assert "check security_protocol" in message


async def test_a_broker_certificate_from_another_ca_is_refused(
    secure_kafka: SecureKafka, unique_name: str
) -> None:
    security = KafkaSecurity(security_protocol="SSL", ssl_cafile=str(secure_kafka.tls.other_ca))
    message = await refusal(secure_kafka.ssl_bootstrap, security, unique_name)
    assert "CERTIFICATE_VERIFY_FAILED" in message
    assert "ssl_cafile" in message


async def test_a_client_without_a_certificate_is_refused_by_the_mutual_tls_listener(
    secure_kafka: SecureKafka, unique_name: str
) -> None:
    security = KafkaSecurity(security_protocol="SSL", ssl_cafile=str(secure_kafka.tls.ca))
    message = await refusal(secure_kafka.ssl_bootstrap, security, unique_name)
    assert "ssl_certfile" in message
