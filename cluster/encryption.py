"""The ``encryption`` section of a bus: end-to-end keys for the broker backends.

Example::

    encryption:
      key_id: k2                       # seals new messages
      keys:
        k1: "${RAYBUS_KEY_K1}"         # base64 of 32 random bytes, from the environment
        k2: {hkdf_secret: "${RAYBUS_SECRET}", salt: "payments-bus"}   # derived with HKDF

Every key listed opens messages; ``key_id`` seals. This is the bus's state at launch; a
running bus rotates live with ``raybus keys`` (:mod:`cluster.key_rotation`): add the new
key, promote it, retire the old one, each applied by every process before the next.
``${NAME}`` is read from the environment where the configuration is built (the driver,
the CLI), never by actors; keys are held as :class:`~pydantic.SecretStr` (base64) and
never shown.
"""

from __future__ import annotations

import base64
import os
import re
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from transports.crypto.keyring import (
    DEFAULT_MESSAGES_PER_KEY,
    Keyring,
    key_from_base64,
    key_from_secret,
)
from transports.crypto.replay import DEFAULT_WINDOW, MIN_WINDOW

__all__ = ["EncryptionConfig"]

_WHOLE_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_DERIVED_FIELDS = frozenset({"hkdf_secret", "salt"})


def _resolve(value: str | SecretStr) -> str:
    """``${NAME}`` from the environment; any other text is taken as it is."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    match = _WHOLE_REFERENCE.match(value)
    if match is None:
        if "${" in value:
            raise ValueError("write the whole value as ${NAME}")
        return value
    found = os.environ.get(match.group(1))
    if found is None:
        raise ValueError(f"environment variable {match.group(1)} is not set")
    return found


def _key_of(key_id: str, value: Any) -> bytes:
    if isinstance(value, SecretStr | str):
        try:
            return key_from_base64(_resolve(value))
        except ValueError as exc:
            raise ValueError(f"{key_id}: {exc}") from None
    if not isinstance(value, dict) or "hkdf_secret" not in value or set(value) - _DERIVED_FIELDS:
        raise ValueError(
            f"{key_id}: give base64 of 32 bytes, or {{hkdf_secret: ..., salt: ...}} to derive"
        )
    secret = value["hkdf_secret"]
    salt = value.get("salt", "")
    if not isinstance(secret, str) or not isinstance(salt, str):
        raise ValueError(f"{key_id}: hkdf_secret and salt must be strings")
    try:
        return key_from_secret(_resolve(secret).encode("utf-8"), key_id, salt.encode())
    except ValueError as exc:
        raise ValueError(f"{key_id}: {exc}") from None


class EncryptionConfig(BaseModel):
    """Keys that seal and open every message between clients and workers on a broker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str = Field(description="the key that seals new messages; one of keys")
    keys: dict[str, SecretStr] = Field(
        min_length=1, description="id -> base64 of 32 bytes, or {hkdf_secret, salt}"
    )
    max_messages_per_key: int = Field(
        DEFAULT_MESSAGES_PER_KEY,
        ge=1,
        lt=2**32,
        description="per process; all processes together must stay well under 2^32",
    )
    replay_window: int = Field(DEFAULT_WINDOW, ge=MIN_WINDOW, le=2**20)

    @field_validator("keys", mode="before")
    @classmethod
    def _load_keys(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value  # pydantic reports the type
        loaded: dict[str, SecretStr] = {}
        for key_id, given in value.items():
            key = _key_of(str(key_id), given)
            Keyring().add(str(key_id), key)  # the same id and size rules as at run time
            loaded[str(key_id)] = SecretStr(base64.b64encode(key).decode("ascii"))
        return loaded

    @model_validator(mode="after")
    def _seals_with_a_listed_key(self) -> Self:
        if self.key_id not in self.keys:
            raise ValueError(f"key_id {self.key_id!r} is not one of keys")
        return self

    def keyring(self) -> Keyring:
        """A fresh keyring for one process (each counts its own messages per key)."""
        return Keyring.of(
            {key_id: base64.b64decode(key.get_secret_value()) for key_id, key in self.keys.items()},
            self.key_id,
            max_messages_per_key=self.max_messages_per_key,
        )
