"""Local development services: a real Apache Kafka broker, an SQS endpoint (moto) and
an OAuth authorization server (Keycloak, for the gateway's OAuth tests).

All bind 127.0.0.1 on free ports and are reached exactly as production ones would be
(aiokafka with a bootstrap address, aioboto3 with an endpoint URL).

- ``cluster.services.kafka``: :class:`KafkaService` (jars cached by ``kafka_dist``).
- ``cluster.services.sqs``: :class:`SqsService` and ``sqs_client_kwargs``.
- ``cluster.services.keycloak``: :class:`KeycloakService` (cached by ``keycloak_dist``),
  started by ``services up`` only when named (``--only keycloak``).
- ``cluster.cli.services``: ``raybus services up|down|status`` for a shell.
- ``tests/services_plugin.py``: the same services as pytest session fixtures.

This package imports nothing eagerly, so the ``raybus`` CLI does not pay for aiokafka
and aioboto3 unless a services command runs.
"""
