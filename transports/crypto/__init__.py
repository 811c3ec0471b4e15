"""End-to-end encryption between raybus's own clients and workers, over any transport.

``keyring`` (keys by id, rotation, the per-key message cap), ``replay`` (per-sender
sliding windows), ``seal`` (the wire format: what is sealed, what stays readable, what
is bound as associated data) and ``transport`` (:class:`EncryptedTransport` and the
:class:`SealedChannel` the broker backends use for their frames).
"""

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
