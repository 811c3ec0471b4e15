"""The ``encryption`` section: keys from the environment or HKDF, one line per mistake."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest

from cluster.config import BusConfig, ConfigError, parse_config

KEY = base64.b64encode(os.urandom(32)).decode()
SECRET = base64.b64encode(os.urandom(48)).decode()


def _config(encryption: Any, backend: str = "kafka") -> BusConfig:
    return parse_config(
        {
            "name": "enc",
            "backend": backend,
            "kafka": {"bootstrap": "127.0.0.1:9092"},
            "pools": [{"name": "kit", "server": "cluster.examples.testkit:server"}],
            "encryption": encryption,
        }
    )


def test_keys_come_from_the_environment_and_from_hkdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYBUS_KEY_K1", KEY)
    monkeypatch.setenv("RAYBUS_SECRET", SECRET)
    config = _config(
        {
            "key_id": "k2",
            "keys": {"k1": "${RAYBUS_KEY_K1}", "k2": {"hkdf_secret": "${RAYBUS_SECRET}"}},
        }
    )
    assert config.encryption is not None
    ring = config.encryption.keyring()
    assert ring.key_ids() == ["k1", "k2"]
    assert ring.current_id == "k2"
    assert config.encryption.keys["k1"].get_secret_value() == KEY
    assert KEY not in repr(config)
    assert config.encryption.model_validate(config.encryption.model_dump()) == config.encryption


@pytest.mark.parametrize(
    ("encryption", "problem"),
    [
        (
            {"key_id": "k1", "keys": {"k1": "${RAYBUS_UNSET_KEY}"}},
            "encryption.keys: k1: environment variable RAYBUS_UNSET_KEY is not set",
        ),
        (
            {"key_id": "k1", "keys": {"k1": base64.b64encode(b"sixteen byte key").decode()}},
            "encryption.keys: k1: the key must be 32 bytes (got 16)",
        ),
        (
            {"key_id": "k1", "keys": {"k1": {"hkdf_secret": "hunter2hunter2"}}},
            "encryption.keys: k1: the secret must be at least 32 bytes of random data (got 14);"
            " passwords are not accepted",
        ),
        (
            {"key_id": "k1", "keys": {"k1": {"secret": SECRET}}},
            "encryption.keys: k1: give base64 of 32 bytes, or {hkdf_secret: ..., salt: ...}"
            " to derive",
        ),
        ({"key_id": "k9", "keys": {"k1": KEY}}, "encryption: key_id 'k9' is not one of keys"),
        (
            {"key_id": "k1", "keys": {}},
            "encryption.keys: Dictionary should have at least 1 item after validation, not 0",
        ),
        (
            {"key_id": "k1", "keys": {"k1": KEY}, "replay_window": 8},
            "encryption.replay_window: Input should be greater than or equal to 64",
        ),
    ],
)
def test_a_bad_section_is_one_line_naming_the_field(encryption: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(encryption)
    assert caught.value.problems == [problem]
    assert "hunter2" not in str(caught.value)


def test_encryption_is_refused_on_the_ray_backend() -> None:
    with pytest.raises(ConfigError, match="applies to the kafka and sqs backends"):
        _config({"key_id": "k1", "keys": {"k1": KEY}}, backend="ray")
