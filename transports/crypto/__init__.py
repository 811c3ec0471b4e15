"""End-to-end encryption between raybus's own clients and workers, over any transport.

``keyring`` (keys by id, rotation, the per-key message cap), ``replay`` (per-sender
sliding windows), ``seal`` (the wire format: what is sealed, what stays readable, what
is bound as associated data) and ``transport`` (:class:`EncryptedTransport` and the
:class:`SealedChannel` the broker backends use for their frames).

Names load on first use: the configuration imports the keyring's checks, and a process
that never seals (an unencrypted bus) should not pay for the cipher's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transports.crypto.keyring import KeyExhausted, Keyring, key_from_base64, key_from_secret
    from transports.crypto.seal import Direction, SealRejected
    from transports.crypto.transport import EncryptedTransport, SealedChannel

__all__ = [
    "Direction",
    "EncryptedTransport",
    "KeyExhausted",
    "Keyring",
    "SealRejected",
    "SealedChannel",
    "key_from_base64",
    "key_from_secret",
]

_HOMES = {
    "Direction": "seal",
    "EncryptedTransport": "transport",
    "KeyExhausted": "keyring",
    "Keyring": "keyring",
    "SealRejected": "seal",
    "SealedChannel": "transport",
    "key_from_base64": "keyring",
    "key_from_secret": "keyring",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"transports.crypto.{home}"), name)
