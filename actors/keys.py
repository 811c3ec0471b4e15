"""Live key rotation for one bus: the keyring's state, who follows it, what is safe next.

Every process of an encrypted bus that seals or opens (clients, the gateway's clients,
workers, the discovery reader) keeps a :class:`~transports.crypto.keyring.Keyring`. One
:class:`KeyRotation` per bus holds the state they all follow (:class:`KeyringState`:
keys by id, the sealing one, the retired ids, a version that grows with every change)
and which version each process last applied. A process asks about once a second
(:meth:`KeyRotation.sync`), telling the version it holds; it gets the state back only
when there is a newer one. Asking is also how it stays *live*: one not heard for
``lease_s`` no longer counts (it died, or closed without saying so).

Rotation is three steps, each refused here while it would fail calls in flight:

1. **add** a key: every receiver must be able to open it before anyone seals with it;
2. **promote** it: refused until every live process applied the version that added it;
3. **retire** the old one: refused until every live process applied the promotion
   (nobody seals with the old key any more) *and* ``drain_s`` passed since then (what
   was sealed with it before has been opened).

Each step returns the state it leads to without taking it; :meth:`KeyRotation.commit`
takes it once the caller has stored it (a restarted keys actor must never hand out an
older state than one a process already applied). A step whose outcome already holds
returns the state unchanged, so an operator can run it again after a wait timed out.
Retired ids are never reused for new key material.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from transports.crypto.keyring import Keyring
from transports.errors import BusError

__all__ = [
    "DEFAULT_LEASE_S",
    "DrainPending",
    "KeyRotation",
    "KeyringState",
    "RotationRefused",
    "apply_state",
]

# A process that has not asked for this long is no longer waited for. It asks every
# second; a loaded 2-core machine was seen to delay a Ray actor call by several seconds.
DEFAULT_LEASE_S = 15.0


class RotationRefused(BusError):
    """A rotation step that is not possible (unknown key, the sealing key, wrong order)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class DrainPending(RotationRefused):
    """Retiring now could reject messages still in flight: ``left_s`` more to wait."""

    retriable = True

    def __init__(self, key_id: str, left_s: float) -> None:
        BusError.__init__(self, key_id, left_s)  # its own arguments: it pickles as itself
        self.key_id = key_id
        self.left_s = left_s
        self.reason = f"key {key_id!r} may still be in flight: retire in {left_s:.1f} s"


@dataclass(frozen=True, slots=True)
class KeyringState:
    """What every process of a bus applies to its keyring.

    ``keys`` holds the material of every key that opens (in order added); ``added_at`` the
    version that added each; ``promoted_at`` the version that made ``current`` seal.
    """

    version: int
    keys: dict[str, bytes]
    added_at: dict[str, int]
    current: str
    promoted_at: int
    retired: tuple[str, ...] = ()

    @classmethod
    def initial(cls, keys: dict[str, bytes], current: str) -> KeyringState:
        """Version 1: the bus's configured keys, ``current`` sealing."""
        if current not in keys:
            raise ValueError(f"key {current!r} is not one of the keys")
        return cls(1, dict(keys), dict.fromkeys(keys, 1), current, 1)

    def public(self) -> dict[str, Any]:
        """The state without key material (for ``raybus keys list`` and logs)."""
        return {
            "version": self.version,
            "current": self.current,
            "keys": list(self.keys),
            "retired": list(self.retired),
        }

    def to_json(self) -> bytes:
        """For the bus's store (to survive a restart of the keys actor)."""
        return json.dumps(
            {
                "version": self.version,
                "keys": {k: base64.b64encode(v).decode("ascii") for k, v in self.keys.items()},
                "added_at": self.added_at,
                "current": self.current,
                "promoted_at": self.promoted_at,
                "retired": list(self.retired),
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> KeyringState:
        raw = json.loads(data)
        return cls(
            int(raw["version"]),
            {k: base64.b64decode(v) for k, v in raw["keys"].items()},
            {k: int(v) for k, v in raw["added_at"].items()},
            str(raw["current"]),
            int(raw["promoted_at"]),
            tuple(raw["retired"]),
        )


def apply_state(keyring: Keyring, state: KeyringState) -> None:
    """Make ``keyring`` hold what ``state`` says: add, then promote, then retire.

    In that order a keyring never lacks the key it must seal with, and never drops the
    one it seals with.
    """
    held = set(keyring.key_ids())
    for key_id, key in state.keys.items():
        if key_id not in held:
            keyring.add(key_id, key)
    if keyring.current_id != state.current:
        keyring.promote(state.current)
    for key_id in held - set(state.keys):
        keyring.retire(key_id)


@dataclass(slots=True)
class _Member:
    applied: int
    seen_at: float


@dataclass(slots=True)
class KeyRotation:
    """The state of one bus's keys and the processes that follow it (see module doc).

    ``clock`` is monotonic seconds; ``settle_s`` holds every step for that long after
    construction (a restarted keys actor has forgotten who follows it: give them a
    lease to be heard again before anything is decided on their behalf).
    """

    state: KeyringState
    clock: Callable[[], float]
    lease_s: float = DEFAULT_LEASE_S
    settle_s: float = 0.0
    _members: dict[str, _Member] = field(default_factory=dict)
    _switched_at: float | None = None  # when every live process first sealed with current
    _started_at: float = 0.0

    def __post_init__(self) -> None:
        self._started_at = self.clock()

    # -- the processes that follow ------------------------------------------------

    def sync(self, member: str, applied: int) -> KeyringState | None:
        """``member`` holds version ``applied``: the newer state, or None if current."""
        self._members[member] = _Member(applied, self.clock())
        self._note_switch()
        return self.state if applied != self.state.version else None

    def leave(self, member: str) -> None:
        self._members.pop(member, None)
        self._note_switch()

    def live_members(self) -> dict[str, int]:
        """Processes heard within the lease, with the version each applied."""
        now = self.clock()
        for name in [n for n, m in self._members.items() if now - m.seen_at > self.lease_s]:
            del self._members[name]
        return {name: m.applied for name, m in self._members.items()}

    def lagging(self, version: int | None = None) -> dict[str, int]:
        """Live processes that have not applied ``version`` (default: the latest)."""
        wanted = self.state.version if version is None else version
        return {n: v for n, v in self.live_members().items() if v < wanted}

    def _note_switch(self) -> None:
        if self._switched_at is None and not self.lagging(self.state.promoted_at):
            self._switched_at = self.clock()

    # -- the steps ------------------------------------------------------------------

    def commit(self, state: KeyringState) -> None:
        """Take ``state`` (what a step returned) as the one every process follows."""
        if state.promoted_at != self.state.promoted_at:
            self._switched_at = None
        self.state = state
        self._note_switch()

    def add(self, key_id: str, key: bytes) -> KeyringState:
        """The state with ``key`` added as ``key_id`` (opening only).

        Raises:
            RotationRefused: a malformed id or key, a retired id, or an id holding
                other key material.
        """
        self._settled()
        state = self.state
        if key_id in state.retired:
            raise RotationRefused(f"key id {key_id!r} was retired; ids are never reused")
        held = state.keys.get(key_id)
        if held is not None:
            if hmac.compare_digest(held, key):
                return state
            raise RotationRefused(f"key id {key_id!r} already holds another key")
        try:
            Keyring().add(key_id, key)  # the keyring's own id and size rules
        except ValueError as exc:
            raise RotationRefused(str(exc)) from None
        version = state.version + 1
        return replace(
            state,
            version=version,
            keys={**state.keys, key_id: key},
            added_at={**state.added_at, key_id: version},
        )

    def promote(self, key_id: str) -> KeyringState:
        """The state that seals new messages with ``key_id``.

        Raises:
            RotationRefused: no such key (or retired), or a live process cannot open it
                yet (the message names it).
        """
        self._settled()
        state = self.state
        if key_id == state.current:
            return state
        if key_id not in state.keys:
            raise RotationRefused(self._unknown(key_id))
        behind = self.lagging(state.added_at[key_id])
        if behind:
            raise RotationRefused(
                f"key {key_id!r} is not yet held by every process of the bus: "
                f"{_names(behind)} still at an older version"
            )
        version = state.version + 1
        return replace(state, version=version, current=key_id, promoted_at=version)

    def retire(self, key_id: str, drain_s: float) -> KeyringState:
        """The state that no longer opens messages sealed with ``key_id``.

        Raises:
            RotationRefused: no such key, or it is the sealing key, or a live process
                still seals with an older key (the message names it).
            DrainPending: every process switched less than ``drain_s`` ago.
        """
        self._settled()
        state = self.state
        if key_id in state.retired:
            return state
        if key_id not in state.keys:
            raise RotationRefused(self._unknown(key_id))
        if key_id == state.current:
            raise RotationRefused(
                f"key {key_id!r} seals new messages: promote another key before retiring it"
            )
        behind = self.lagging(state.promoted_at)
        if behind:
            raise RotationRefused(
                f"not every process seals with {state.current!r} yet: {_names(behind)} "
                "still at an older version"
            )
        self._note_switch()
        assert self._switched_at is not None  # nobody lagging: noted just above
        left_s = drain_s - (self.clock() - self._switched_at)
        if left_s > 0:
            raise DrainPending(key_id, left_s)
        return replace(
            state,
            version=state.version + 1,
            keys={k: v for k, v in state.keys.items() if k != key_id},
            added_at={k: v for k, v in state.added_at.items() if k != key_id},
            retired=(*state.retired, key_id),
        )

    def describe(self) -> dict[str, Any]:
        """The state without key material, and who follows it at which version."""
        return {**self.state.public(), "members": self.live_members()}

    def _unknown(self, key_id: str) -> str:
        known = ", ".join(self.state.keys)
        return f"no key {key_id!r} in the keyring (keys: {known})"

    def _settled(self) -> None:
        left_s = self.settle_s - (self.clock() - self._started_at)
        if left_s > 0:
            raise RotationRefused(
                f"the keys actor restarted and is hearing from the bus's processes again: "
                f"retry in {left_s:.0f} s"
            )


def _names(members: dict[str, int]) -> str:
    shown = sorted(members)[:3]
    more = len(members) - len(shown)
    text = ", ".join(f"{name} (v{members[name]})" for name in shown)
    return text + (f" and {more} more" if more else "")
