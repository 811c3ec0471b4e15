"""The secured local broker's configuration, without starting it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.services.kafka import render_properties, server_properties
from cluster.services.kafka_secure import SecureKafkaService


def test_more_listeners_are_advertised_on_loopback_beside_plaintext(tmp_path: Path) -> None:
    props = server_properties(
        broker_port=1,
        controller_port=2,
        log_dir=tmp_path,
        more_listeners={"SSL": 3, "SASL_SSL": 4},
    )
    clients = "PLAINTEXT://127.0.0.1:1,SSL://127.0.0.1:3,SASL_SSL://127.0.0.1:4"
    assert props["listeners"] == f"{clients},CONTROLLER://127.0.0.1:2"
    assert props["advertised.listeners"] == clients
    assert props["listener.security.protocol.map"] == (
        "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"
    )
    assert props["inter.broker.listener.name"] == "PLAINTEXT"


def secure(tmp_path: Path, **options: object) -> SecureKafkaService:
    return SecureKafkaService(
        tmp_path,
        keystore_pem=tmp_path / "server.pem",
        scram_users={"app": "pw-1"},
        **options,  # type: ignore[arg-type]
    )


def test_tls_uses_a_pem_key_store_and_scram_users_are_made_at_format(tmp_path: Path) -> None:
    service = secure(tmp_path, client_ca_pem=tmp_path / "ca.pem")
    props = service._listener_properties({"SSL": 3, "SASL_SSL": 4})
    assert props["ssl.keystore.type"] == "PEM"
    assert props["ssl.keystore.location"] == str(tmp_path / "server.pem")
    assert props["listener.name.sasl_ssl.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["listener.name.ssl.ssl.client.auth"] == "required"
    assert "oauthbearer" not in render_properties(props).lower()
    assert service._format_options() == ("--add-scram", "SCRAM-SHA-512=[name=app,password=pw-1]")


def test_unsigned_oauthbearer_is_only_on_when_asked(tmp_path: Path) -> None:
    props = secure(tmp_path, unsecured_oauthbearer=True)._listener_properties({})
    assert props["listener.name.sasl_ssl.sasl.enabled.mechanisms"] == "SCRAM-SHA-512,OAUTHBEARER"
    assert "listener.name.ssl.ssl.client.auth" not in props


@pytest.mark.parametrize("users", [{"app": "pw,admin"}, {"a]b": "pw"}, {"app": ""}])
def test_scram_text_that_would_break_the_format_command_is_refused(
    tmp_path: Path, users: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match=r"\[A-Za-z0-9._-\]"):
        SecureKafkaService(tmp_path, keystore_pem=tmp_path / "k.pem", scram_users=users)
