"""The rotation rules of a bus's keys, driven without Ray: each step refused while it
would fail calls in flight, and a keyring that follows the state seals and opens as told."""

from __future__ import annotations

import os
import pickle

import pytest

from actors.keys import DrainPending, KeyringState, KeyRotation, RotationRefused, apply_state
from tests.actors.fakes import FakeClock
from transports.crypto.keyring import Keyring
from transports.crypto.seal import Direction, Sealer, SealRejected, open_sealed
from transports.message import Notification

K1, K2, K3 = os.urandom(32), os.urandom(32), os.urandom(32)


def _rotation(clock: FakeClock, lease_s: float = 15.0) -> KeyRotation:
    return KeyRotation(KeyringState.initial({"k1": K1}, "k1"), clock, lease_s=lease_s)


def _step(rotation: KeyRotation, state: KeyringState) -> int:
    rotation.commit(state)
    return state.version


def _follow(rotation: KeyRotation, member: str, ring: Keyring, applied: int) -> int:
    state = rotation.sync(member, applied)
    if state is None:
        return applied
    apply_state(ring, state)
    rotation.sync(member, state.version)
    return state.version


def test_promoting_a_key_nobody_added_is_refused_by_name() -> None:
    rotation = _rotation(FakeClock())
    with pytest.raises(RotationRefused, match=r"no key 'k9' in the keyring \(keys: k1\)"):
        rotation.promote("k9")


def test_retiring_the_sealing_key_is_refused() -> None:
    rotation = _rotation(FakeClock())
    with pytest.raises(RotationRefused, match="'k1' seals new messages: promote another"):
        rotation.retire("k1", drain_s=0)


def test_a_retired_id_is_never_reused_and_an_id_never_takes_other_key_material() -> None:
    clock = FakeClock()
    rotation = _rotation(clock)
    _step(rotation, rotation.add("k2", K2))
    assert rotation.add("k2", K2) is rotation.state  # the same again: nothing to do
    with pytest.raises(RotationRefused, match="'k2' already holds another key"):
        rotation.add("k2", K3)
    _step(rotation, rotation.promote("k2"))
    _step(rotation, rotation.retire("k1", drain_s=0))
    with pytest.raises(RotationRefused, match="'k1' was retired; ids are never reused"):
        rotation.add("k1", K3)
    with pytest.raises(RotationRefused, match="must be 32 bytes"):
        rotation.add("k4", b"short")


def test_promote_waits_until_every_live_process_holds_the_key() -> None:
    clock = FakeClock()
    rotation = _rotation(clock)
    worker, client = Keyring(), Keyring()
    at_worker = _follow(rotation, "worker", worker, 0)
    at_client = _follow(rotation, "client", client, 0)
    added = _step(rotation, rotation.add("k2", K2))
    at_worker = _follow(rotation, "worker", worker, at_worker)
    assert at_worker == added
    with pytest.raises(RotationRefused, match=r"not yet held by every process.*client \(v1\)"):
        rotation.promote("k2")
    at_client = _follow(rotation, "client", client, at_client)
    _step(rotation, rotation.promote("k2"))
    assert rotation.lagging() == {"worker": added, "client": added}


def test_a_process_not_heard_for_a_lease_is_no_longer_waited_for() -> None:
    clock = FakeClock()
    rotation = _rotation(clock, lease_s=15)
    _follow(rotation, "gone", Keyring(), 0)
    _step(rotation, rotation.add("k2", K2))
    assert rotation.lagging() == {"gone": 1}
    clock.advance(16)
    assert rotation.lagging() == {}
    _step(rotation, rotation.promote("k2"))  # nobody left to refuse it for


def test_retire_waits_for_every_process_to_switch_and_then_for_the_drain() -> None:
    clock = FakeClock()
    rotation = _rotation(clock)
    ring = Keyring()
    applied = _follow(rotation, "worker", ring, 0)
    _step(rotation, rotation.add("k2", K2))
    applied = _follow(rotation, "worker", ring, applied)
    _step(rotation, rotation.promote("k2"))
    with pytest.raises(RotationRefused, match=r"not every process seals with 'k2'.*worker"):
        rotation.retire("k1", drain_s=10)
    clock.advance(30)  # time alone does not help: the worker must switch first
    applied = _follow(rotation, "worker", ring, applied)
    clock.advance(4)
    with pytest.raises(DrainPending, match=r"'k1' may still be in flight: retire in 6\.0 s"):
        rotation.retire("k1", drain_s=10)
    clock.advance(6)
    _step(rotation, rotation.retire("k1", drain_s=10))
    _follow(rotation, "worker", ring, applied)
    assert ring.key_ids() == ["k2"]
    assert rotation.describe() == {
        "version": 4,
        "current": "k2",
        "keys": ["k2"],
        "retired": ["k1"],
        "members": {"worker": 4},
    }


def test_a_restarted_rotation_takes_no_step_until_its_processes_were_heard_again() -> None:
    clock = FakeClock()
    rotation = KeyRotation(KeyringState.initial({"k1": K1, "k2": K2}, "k1"), clock, settle_s=15)
    with pytest.raises(RotationRefused, match=r"restarted.*retry in 15 s"):
        rotation.promote("k2")
    clock.advance(15)
    _step(rotation, rotation.promote("k2"))


def test_the_state_survives_its_store_and_pickles_without_showing_keys() -> None:
    state = KeyringState.initial({"k1": K1, "k2": K2}, "k2")
    assert KeyringState.from_json(state.to_json()) == state
    assert pickle.loads(pickle.dumps(state)) == state
    assert K1.hex() not in str(state.public())
    assert state.public()["keys"] == ["k1", "k2"]
    for error in (RotationRefused("why"), DrainPending("k1", 2.5)):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error)
        assert str(again) == str(error)


def _sealed_by(ring: Keyring) -> Notification:
    sealer = Sealer(ring, "client", Direction.TO_WORKER)
    message, _ = sealer.seal(b'{"jsonrpc":"2.0","method":"ping"}', None, "topic")
    return message


def _open(ring: Keyring, message: Notification) -> bytes:
    opened = open_sealed(
        ring, message, None, direction=Direction.TO_WORKER, destinations=frozenset({"topic"})
    )
    return opened.body


def test_a_keyring_that_follows_seals_with_the_newest_and_rejects_the_retired_key() -> None:
    clock = FakeClock()
    rotation = _rotation(clock)
    sender, receiver = Keyring(), Keyring()
    at_sender = _follow(rotation, "sender", sender, 0)
    at_receiver = _follow(rotation, "receiver", receiver, 0)
    old = _sealed_by(sender)  # sealed with k1, still in flight during the rotation
    _step(rotation, rotation.add("k2", K2))
    at_sender = _follow(rotation, "sender", sender, at_sender)
    at_receiver = _follow(rotation, "receiver", receiver, at_receiver)
    _step(rotation, rotation.promote("k2"))
    at_sender = _follow(rotation, "sender", sender, at_sender)
    new = _sealed_by(sender)
    at_receiver = _follow(rotation, "receiver", receiver, at_receiver)
    assert _open(receiver, old) == _open(receiver, new)  # both open while k1 drains
    assert isinstance(new.params, dict)
    assert new.params["kid"] == "k2"
    _step(rotation, rotation.retire("k1", drain_s=0))
    _follow(rotation, "receiver", receiver, at_receiver)
    with pytest.raises(SealRejected) as rejected:
        _open(receiver, old)
    assert str(rejected.value) == str(SealRejected())  # the one generic refusal
