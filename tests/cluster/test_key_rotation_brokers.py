"""Three live key rotations on a running encrypted bus under steady load: no call fails.

The bus starts with k1 from its configuration; while callers call back to back, the
keys go k1 -> k2 -> k3 -> k4 through ``add``, ``promote`` and ``retire`` (the library
behind ``raybus keys``), each step waiting until every process of the bus applied it.
Afterwards the raw Kafka records show every key in turn and the newest last, no tool
name, argument or result in clear; a record sealed with a retired key no longer opens
in a process of the bus, while the same record opens with the old key (positive
control: the refusal is the retirement, not a broken record).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from typing import Any

import pytest

from cluster.backends.kafka import topics_for
from cluster.backends.key_follower import KeyFollower
from cluster.config import BusConfig
from cluster.key_rotation import add_key, describe_keys, promote_key, retire_key
from tests.cluster.bus_helpers import bus_config, running_bus
from tests.faults.broker_bus import BROKERS, Broker, broker_of
from tests.faults.history import check
from tests.faults.steady_load import SteadyLoad
from transports.codec import decode_message
from transports.crypto.keyring import Keyring
from transports.crypto.seal import Direction, SealRejected, open_sealed
from transports.envelope import Envelope
from transports.message import Notification

pytestmark = [pytest.mark.ray, pytest.mark.slow]

KIT = {"name": "kit", "server": "cluster.examples.testkit:server", "max_concurrency": 8}
# What was sealed with a key just before every process switched must be opened within
# this. The load keeps no backlog, but with 3 s one run in 7 on a loaded 2-core machine
# ended with a call failed (not pinned down; most likely an answer in transit longer).
DRAIN_S = 10.0
# Calls ended between two rotations (and before the first).
CALLS_PER_STEP = 20


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> Broker:
    return broker_of(request)


def _encrypted_bus(broker: Broker, monkeypatch: pytest.MonkeyPatch, k1: bytes) -> BusConfig:
    monkeypatch.setenv("RAYBUS_TEST_ROTATION_K1", base64.b64encode(k1).decode())
    return bus_config(
        [{**KIT, "min_workers": 2, "max_workers": 2}],
        backend=broker.kind,
        **broker.settings(),
        encryption={"key_id": "k1", "keys": {"k1": "${RAYBUS_TEST_ROTATION_K1}"}},
    )


def _clear_part(value: bytes | None) -> bytes:
    """A sealed record's value without its random bytes (nonce and ciphertext, base64):
    they may spell any short word by chance (``echo`` did, in one run of thousands of
    records), so only what is meant to be readable is searched for secrets."""
    message = json.loads(value or b"{}")
    params = message.get("params") or {}
    assert params.get("ct"), message  # something was sealed
    params["nonce"] = params["ct"] = ""
    return json.dumps(message).encode()


async def test_three_rotations_under_load_fail_no_call_and_lose_none(
    ray_session: None, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    k1 = os.urandom(32)
    config = _encrypted_bus(broker, monkeypatch, k1)
    canary = f"canary-{uuid.uuid4().hex}"
    async with running_bus(config) as client:
        # moto (one Python process) stalled under 4 callers on a loaded 2-core machine, and
        # a stalled answer is redelivered only after its visibility timeout: 2 callers.
        callers = 4 if broker.kind == "kafka" else 2
        load = SteadyLoad(client, callers=callers, limit=100_000, deadline_s=60, pause_s=0.01)
        load.start()
        try:
            await load.run_for(CALLS_PER_STEP)
            for old, new in (("k1", "k2"), ("k2", "k3"), ("k3", "k4")):
                # Back to back, as a script would: each step's own wait is the only
                # thing between it and the next (calls keep running throughout).
                added = await add_key(config.name, new, os.urandom(32), timeout_s=120)
                assert new in added["keys"]
                promoted = await promote_key(config.name, new, timeout_s=120)
                assert promoted["current"] == new
                retired = await retire_key(config.name, old, drain_s=DRAIN_S, timeout_s=120)
                assert old in retired["retired"]
                await load.run_for(CALLS_PER_STEP)
        finally:
            await load.stop()
        verdict = check(load.history)
        assert verdict.clean, verdict
        assert verdict.ok == verdict.total, (verdict, load.fallbacks)  # 0 failed calls
        assert verdict.total >= 4 * CALLS_PER_STEP

        keys = await describe_keys(config.name)
        assert (keys["current"], keys["keys"], keys["retired"]) == (
            "k4",
            ["k4"],
            ["k1", "k2", "k3"],
        )
        # Client, 2 workers and (Kafka) the discovery reader: all at the newest version.
        assert len(keys["members"]) >= 3, keys
        assert set(keys["members"].values()) == {keys["version"]}, keys

        for n in range(4):  # after the rotations: sealed with k4
            echoed = await client.call_tool("echo", {"text": f"{canary}-{n}"}, timeout_s=120)
            assert echoed.structured_content == {"result": f"{canary}-{n}"}

        # A process that joins now, configured with k1 only, follows the bus to k4.
        joined = Keyring.of({"k1": k1}, "k1")
        follower = KeyFollower(config.name, joined, "test-joiner")
        await follower.start()
        await follower.stop()
        assert (joined.current_id, joined.key_ids()) == ("k4", ["k4"])
        if broker.kind == "kafka":
            await _raw_records_show_the_newest_key_and_no_plaintext(config, k1, joined, canary)


async def _raw_records_show_the_newest_key_and_no_plaintext(
    config: BusConfig, k1: bytes, joined: Keyring, canary: str
) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    assert config.kafka is not None
    topic = topics_for(config).requests_for_capability("kit")
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka.bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[Any] = []
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
        assert partitions
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        async with asyncio.timeout(120):
            while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    assert records
    for record in records:  # nothing in clear: tool name, arguments, answers
        blob = b"|".join(
            [record.key or b"", _clear_part(record.value)] + [v for _, v in record.headers]
        )
        for secret in (canary.encode(), b"echo", b"tools/call"):
            assert secret not in blob
    sealed = [(record, decode_message(record.value)) for record in records]
    kids = [_kid(message) for _, message in sealed]
    assert set(kids) == {"k1", "k2", "k3", "k4"}, set(kids)
    # The newest records are the calls made after the last rotation.
    newest = max(range(len(sealed)), key=lambda i: sealed[i][0].timestamp)
    assert kids[newest] == "k4"

    record, message = sealed[kids.index("k1")]
    assert isinstance(message, Notification)
    envelope = Envelope.from_headers(_headers(record))
    opens = frozenset({topic})
    control = open_sealed(
        Keyring.of({"k1": k1}, "k1"),
        message,
        envelope,
        direction=Direction.TO_WORKER,
        destinations=opens,
    )
    assert control.body  # the old key still opens it: the record itself is sound
    with pytest.raises(SealRejected) as rejected:
        open_sealed(joined, message, envelope, direction=Direction.TO_WORKER, destinations=opens)
    assert str(rejected.value) == str(SealRejected())  # the one generic refusal


def _headers(record: Any) -> dict[str, str]:
    return {name: value.decode() for name, value in record.headers}


def _kid(message: object) -> str | None:
    """The id of the key a sealed message says it was sealed with."""
    if isinstance(message, Notification) and isinstance(message.params, dict):
        kid = message.params.get("kid")
        return kid if isinstance(kid, str) else None
    return None
