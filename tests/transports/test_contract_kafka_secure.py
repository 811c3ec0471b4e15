"""The shared transport contract again, over the secured broker's SASL_SSL listener
(TLS + SCRAM-SHA-512): security changes how clients connect, never what they promise."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.services_plugin import SecureKafka
from tests.transports.kafka_pairs import kafka_ends
from tests.transports.pairs import TransportPair
from tests.transports.test_contract import *  # noqa: F403 - the whole suite, again
from transports.kafka.security import KafkaSecurity

pytestmark = pytest.mark.kafka


# Overrides the suite's parametrized ``pair`` (imported above) for this module.
@pytest.fixture  # type: ignore[no-redef]
async def pair(secure_kafka: SecureKafka, unique_name: str) -> AsyncIterator[TransportPair]:
    security = KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=secure_kafka.username,
        sasl_password=secure_kafka.password,
        ssl_cafile=str(secure_kafka.tls.ca),
    )
    bootstrap = secure_kafka.sasl_ssl_bootstrap
    # inject produces over the same secured connection: no send checks apply.
    async with kafka_ends(bootstrap, unique_name, security=security) as ends:
        yield TransportPair(ends.a, ends.b, ends.inject)
