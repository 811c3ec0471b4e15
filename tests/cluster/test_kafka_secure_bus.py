"""A bus whose Kafka is secured as in production: SASL_SSL with SCRAM-SHA-512.

Workers, the discovery reader and the autoscaler's lag reader all reach the broker with
the kafka section's settings, or nothing would be answered, discovered or measured.
"""

from __future__ import annotations

import asyncio

import pytest

from cluster.backends.kafka import kafka_lag
from cluster.bus import bus_status
from tests.cluster.bus_helpers import bus_config, running_bus
from tests.services_plugin import SecureKafka

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

PASSWORD_VARIABLE = "RAYBUS_TEST_SECURE_KAFKA_PASSWORD"


async def test_a_bus_answers_calls_over_sasl_ssl_with_scram(
    ray_session: None, secure_kafka: SecureKafka, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_VARIABLE, secure_kafka.password)
    config = bus_config(
        [{"name": "kit", "server": "cluster.examples.testkit:server", "min_workers": 1}],
        backend="kafka",
        kafka={
            "bootstrap": secure_kafka.sasl_ssl_bootstrap,
            "partitions": 2,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": secure_kafka.username,
            "sasl_password": f"${{{PASSWORD_VARIABLE}}}",
            "ssl_cafile": str(secure_kafka.tls.ca),
        },
    )
    assert secure_kafka.password not in repr(config)
    async with running_bus(config) as client:
        results = await client.map_tool_calls(
            [("echo", {"text": f"secured {i}"}) for i in range(20)], concurrency=8, timeout_s=120
        )
        assert [r.structured_content for r in results] == [  # type: ignore[union-attr]
            {"result": f"secured {i}"} for i in range(20)
        ]
        status = await bus_status(config.name)
        assert status["pools"]["kit"]["workers"] == 1
        assert secure_kafka.password not in repr(status)
        async with asyncio.timeout(60):
            while await kafka_lag(config, "kit") != 0:  # noqa: ASYNC110 - broker state
                await asyncio.sleep(0.1)
