"""AES-256-GCM keys by id: which one seals, which ones still open, how often each was used.

Rotation without failed calls is three steps, each on every process of the bus:

1. ``add(k2)`` everywhere: every receiver can open k2 before anyone seals with it;
2. ``promote(k2)`` on the senders: new messages go out under k2, messages already in
   flight under k1 still open;
3. ``retire(k1)`` once nothing sealed under k1 can still arrive.

Random 96-bit nonces stay safe for about 2^32 messages per key (NIST SP 800-38D, 8.3),
counted over *every* process that seals with it. A keyring counts only its own
messages, so the default cap is 2^24 per keyring: up to 256 processes sealing with one
key stay under 2^32 in total. At the cap the keyring moves on to the newest key added
after the current one, or refuses to seal (:class:`KeyExhausted`) when there is none:
it never goes past the cap.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from transports.errors import BusError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "DEFAULT_MESSAGES_PER_KEY",
    "KEY_BYTES",
    "MIN_SECRET_BYTES",
    "KeyExhausted",
    "Keyring",
    "key_from_base64",
    "key_from_secret",
]

KEY_BYTES = 32  # AES-256
DEFAULT_MESSAGES_PER_KEY = 2**24
# A secret to derive from must carry at least a key's worth of bytes; HKDF extracts
# entropy, it cannot add any, so a password is refused rather than stretched.
MIN_SECRET_BYTES = 32
_MIN_DISTINCT_SECRET_BYTES = 12  # catches "aaaa...", "0000..." and similar fillers
_KEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_HKDF_INFO = b"raybus/encryption-key/v1/"


class KeyExhausted(BusError):
    """The sealing key reached its message cap and no next key was added: rotate now."""

    def __init__(self, key_id: str, cap: int) -> None:
        super().__init__(key_id, cap)
        self.key_id = key_id
        self.cap = cap

    def __str__(self) -> str:
        return (
            f"encryption key {self.key_id!r} sealed its cap of {self.cap} messages; "
            "add and promote a new key"
        )


def key_from_base64(text: str) -> bytes:
    """A raw 256-bit key written as base64 (standard alphabet, padded).

    Raises:
        ValueError: not base64, or not exactly 32 bytes (the value is never echoed).
    """
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"the key must be {KEY_BYTES} bytes (got {len(key)})")
    return key


def key_from_secret(secret: bytes, key_id: str, salt: bytes = b"") -> bytes:
    """A 256-bit key derived with HKDF-SHA256 from a high-entropy secret.

    The key id is bound into HKDF's ``info``, so one secret yields unrelated keys per id.

    Raises:
        ValueError: the secret is shorter than :data:`MIN_SECRET_BYTES` or visibly not
            random (too few distinct bytes); passwords are refused, never stretched.
    """
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the secret must be at least {MIN_SECRET_BYTES} bytes of random data "
            f"(got {len(secret)}); passwords are not accepted"
        )
    if len(set(secret)) < _MIN_DISTINCT_SECRET_BYTES:
        raise ValueError("the secret is not random enough (too few distinct characters)")
    # Here, not at the top: the configuration imports this module to check keys.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    derive = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=salt or None,
        info=_HKDF_INFO + key_id.encode("utf-8"),
    )
    return derive.derive(secret)


@dataclass(slots=True)
class _Key:
    aead: AESGCM
    added: int  # order of addition: "the next key" is the oldest added after the current
    sealed: int = 0


class Keyring:
    """Keys by id; one of them seals, every one not retired opens.

    Not thread-safe; one event loop uses it (sealing is synchronous, so coroutines on one
    loop never interleave inside it).
    """

    def __init__(self, *, max_messages_per_key: int = DEFAULT_MESSAGES_PER_KEY) -> None:
        if not 1 <= max_messages_per_key < 2**32:
            raise ValueError("max_messages_per_key must be between 1 and 2^32 - 1")
        self._cap = max_messages_per_key
        self._keys: dict[str, _Key] = {}
        self._current: str | None = None
        self._added = 0

    @classmethod
    def of(
        cls,
        keys: dict[str, bytes],
        current: str,
        *,
        max_messages_per_key: int = DEFAULT_MESSAGES_PER_KEY,
    ) -> Keyring:
        """A keyring holding ``keys`` that seals with ``current``."""
        ring = cls(max_messages_per_key=max_messages_per_key)
        for key_id, key in keys.items():
            ring.add(key_id, key)
        ring.promote(current)
        return ring

    @property
    def current_id(self) -> str | None:
        return self._current

    @property
    def max_messages_per_key(self) -> int:
        return self._cap

    def key_ids(self) -> list[str]:
        """Ids that open, oldest first."""
        return list(self._keys)

    def sealed_count(self, key_id: str) -> int:
        return self._keys[key_id].sealed

    def add(self, key_id: str, key: bytes) -> None:
        """Make ``key`` available for opening (and for a later promote).

        Raises:
            ValueError: a malformed id, a key that is not 32 bytes, or an id already
                holding a different key (ids are never reused for new key material).
        """
        if not _KEY_ID.match(key_id):
            raise ValueError(f"key id {key_id!r} must match {_KEY_ID.pattern}")
        if len(key) != KEY_BYTES:
            raise ValueError(f"key {key_id!r} must be {KEY_BYTES} bytes (got {len(key)})")
        if key_id in self._keys:
            raise ValueError(f"key id {key_id!r} is already in the keyring")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # see key_from_secret

        self._keys[key_id] = _Key(AESGCM(key), self._added)
        self._added += 1

    def promote(self, key_id: str) -> None:
        """Seal new messages with ``key_id`` from now on.

        Raises:
            KeyError: no such key (never added, or retired).
        """
        if key_id not in self._keys:
            raise KeyError(f"key {key_id!r} is not in the keyring")
        self._current = key_id

    def retire(self, key_id: str) -> None:
        """Stop opening messages sealed with ``key_id``.

        Raises:
            ValueError: it is the sealing key (promote another one first).
        """
        if key_id == self._current:
            raise ValueError(f"key {key_id!r} seals new messages: promote another key first")
        self._keys.pop(key_id, None)

    def sealing_key(self) -> tuple[str, AESGCM]:
        """The key to seal one message with, counted against its cap.

        Raises:
            KeyExhausted: the current key is at its cap and no key was added after it.
            LookupError: no key was promoted yet.
        """
        if self._current is None:
            raise LookupError("the keyring has no sealing key: promote one")
        current = self._keys[self._current]
        if current.sealed >= self._cap:
            following = [
                (key.added, key_id)
                for key_id, key in self._keys.items()
                if key.added > current.added and key.sealed < self._cap
            ]
            if not following:
                raise KeyExhausted(self._current, self._cap)
            self._current = min(following)[1]
            current = self._keys[self._current]
        current.sealed += 1
        return self._current, current.aead

    def opening_key(self, key_id: str) -> AESGCM | None:
        """The key that opens messages sealed as ``key_id``; None if unknown or retired."""
        key = self._keys.get(key_id)
        return None if key is None else key.aead
