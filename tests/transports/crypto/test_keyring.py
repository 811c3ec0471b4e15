"""Keys by id: loading, deriving, rotating, and the per-key message cap."""

from __future__ import annotations

import base64
import os

import pytest

from transports.crypto.keyring import (
    KEY_BYTES,
    KeyExhausted,
    Keyring,
    key_from_base64,
    key_from_secret,
)


def test_a_base64_key_of_32_bytes_loads_and_others_are_refused_without_echo() -> None:
    key = os.urandom(KEY_BYTES)
    assert key_from_base64(base64.b64encode(key).decode()) == key
    with pytest.raises(ValueError, match="must be 32 bytes") as short:
        key_from_base64(base64.b64encode(b"s3cr3t-short").decode())
    assert "s3cr3t" not in str(short.value)
    with pytest.raises(ValueError, match="not valid base64"):
        key_from_base64("not base64 at all!")


def test_hkdf_keys_are_stable_per_id_and_differ_between_ids() -> None:
    secret = os.urandom(48)
    assert key_from_secret(secret, "k1") == key_from_secret(secret, "k1")
    assert key_from_secret(secret, "k1") != key_from_secret(secret, "k2")
    assert key_from_secret(secret, "k1", salt=b"bus-a") != key_from_secret(secret, "k1")
    assert len(key_from_secret(secret, "k1")) == KEY_BYTES


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        (b"correct horse battery staple", "at least 32 bytes"),
        (b"a" * 64, "not random enough"),
        (b"0123456789" * 4, "not random enough"),
    ],
)
def test_short_or_repetitive_secrets_are_refused(secret: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        key_from_secret(secret, "k1")


def test_add_promote_retire() -> None:
    ring = Keyring.of({"k1": os.urandom(32)}, "k1")
    assert ring.sealing_key()[0] == "k1"
    ring.add("k2", os.urandom(32))
    assert ring.sealing_key()[0] == "k1"  # added is not promoted
    assert ring.opening_key("k2") is not None
    ring.promote("k2")
    assert ring.sealing_key()[0] == "k2"
    assert ring.opening_key("k1") is not None  # in flight under k1 still opens
    ring.retire("k1")
    assert ring.opening_key("k1") is None
    assert ring.key_ids() == ["k2"]


def test_misuse_is_refused() -> None:
    ring = Keyring.of({"k1": os.urandom(32)}, "k1")
    with pytest.raises(ValueError, match="promote another key first"):
        ring.retire("k1")
    with pytest.raises(ValueError, match="already in the keyring"):
        ring.add("k1", os.urandom(32))
    with pytest.raises(ValueError, match="must be 32 bytes"):
        ring.add("k2", os.urandom(16))
    with pytest.raises(ValueError, match="must match"):
        ring.add("bad id", os.urandom(32))
    with pytest.raises(KeyError):
        ring.promote("k9")
    with pytest.raises(LookupError, match="no sealing key"):
        Keyring().sealing_key()
    with pytest.raises(ValueError, match="max_messages_per_key"):
        Keyring(max_messages_per_key=2**32)


def test_the_cap_refuses_to_seal_past_it_without_a_next_key() -> None:
    ring = Keyring.of({"k1": os.urandom(32)}, "k1", max_messages_per_key=3)
    for _ in range(3):
        ring.sealing_key()
    with pytest.raises(KeyExhausted, match="'k1' sealed its cap of 3 messages"):
        ring.sealing_key()
    assert ring.sealed_count("k1") == 3


def test_the_cap_moves_on_to_the_next_added_key() -> None:
    ring = Keyring.of({"k0": os.urandom(32), "k1": os.urandom(32)}, "k1", max_messages_per_key=2)
    ring.add("k2", os.urandom(32))
    ring.add("k3", os.urandom(32))
    used = [ring.sealing_key()[0] for _ in range(6)]
    assert used == ["k1", "k1", "k2", "k2", "k3", "k3"]  # never back to the older k0
    with pytest.raises(KeyExhausted):
        ring.sealing_key()


def test_key_exhausted_pickles() -> None:
    import pickle

    error = KeyExhausted("k1", 5)
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error)
