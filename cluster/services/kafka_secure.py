"""The local Kafka broker with TLS and SASL turned on, as managed brokers run.

Beside the PLAINTEXT listener every local broker has (readiness probes, topic set-up), it
serves two more on 127.0.0.1:

* ``SSL``: TLS, the server certificate from a PEM file (Kafka's PEM key store:
  ``ssl.keystore.type=PEM``, one file holding the unencrypted PKCS#8 key and the chain),
  optionally requiring a client certificate (mutual TLS);
* ``SASL_SSL``: TLS plus SASL/SCRAM-SHA-512, the users written into the metadata log at
  format time (``kafka-storage format --add-scram``), so they exist before the first
  client connects; optionally also SASL/OAUTHBEARER with Kafka's *unsecured* token
  validator (unsigned JWTs: for testing a client's token plumbing, never a real broker).

The broker authorizes nothing (no authorizer is configured): every authenticated user may
do everything. Certificates and passwords are the caller's (tests generate them).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cluster.services.kafka import KafkaService
from cluster.services.process import LOOPBACK

__all__ = ["SCRAM_MECHANISM", "SecureKafkaService"]

SCRAM_MECHANISM = "SCRAM-SHA-512"
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
_UNSECURED_OAUTH_LOGIN = (
    "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
    'unsecuredLoginStringClaim_sub="raybus-broker";'
)
_SAFE_SCRAM_TEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class SecureKafkaService(KafkaService):
    """A :class:`KafkaService` with an ``SSL`` and a ``SASL_SSL`` listener besides PLAINTEXT.

    Args:
        cache_dir: where the Kafka jars are cached.
        keystore_pem: the server's PEM key store (private key + certificate chain).
        scram_users: SCRAM-SHA-512 users and their passwords ([A-Za-z0-9._-] only: they
            travel through the storage tool's command line).
        client_ca_pem: if given, the ``SSL`` listener requires a client certificate
            signed by this CA (mutual TLS).
        unsecured_oauthbearer: also accept OAUTHBEARER with unsigned tokens (testing only).
        **options: as for :class:`KafkaService`.
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        keystore_pem: Path,
        scram_users: Mapping[str, str],
        client_ca_pem: Path | None = None,
        unsecured_oauthbearer: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(cache_dir, **options)
        for text in (*scram_users, *scram_users.values()):
            if not text or not set(text) <= _SAFE_SCRAM_TEXT:
                raise ValueError("SCRAM user names and passwords must be [A-Za-z0-9._-]+")
        self._keystore_pem = keystore_pem
        self._scram_users = dict(scram_users)
        self._client_ca_pem = client_ca_pem
        self._unsecured_oauthbearer = unsecured_oauthbearer

    @property
    def ssl_bootstrap(self) -> str:
        """``host:port`` of the TLS-only listener."""
        return f"{LOOPBACK}:{self.listener_ports['SSL']}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """``host:port`` of the TLS + SASL listener."""
        return f"{LOOPBACK}:{self.listener_ports['SASL_SSL']}"

    def _more_listeners(self) -> tuple[str, ...]:
        return ("SSL", "SASL_SSL")

    def _listener_properties(self, ports: Mapping[str, int]) -> dict[str, str]:
        mechanisms = [SCRAM_MECHANISM, *(["OAUTHBEARER"] if self._unsecured_oauthbearer else [])]
        properties = {
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self._keystore_pem),
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": ",".join(mechanisms),
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": _SCRAM_LOGIN,
        }
        if self._client_ca_pem is not None:
            properties["listener.name.ssl.ssl.client.auth"] = "required"
            properties["listener.name.ssl.ssl.truststore.type"] = "PEM"
            properties["listener.name.ssl.ssl.truststore.location"] = str(self._client_ca_pem)
        if self._unsecured_oauthbearer:
            properties["listener.name.sasl_ssl.oauthbearer.sasl.jaas.config"] = (
                _UNSECURED_OAUTH_LOGIN
            )
        return properties

    def _format_options(self) -> tuple[str, ...]:
        options: list[str] = []
        for user, password in self._scram_users.items():
            options += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]
        return tuple(options)
