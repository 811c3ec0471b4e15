"""Kafka start-up logic that needs no broker: configuration, cluster ids, early failure."""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import pytest

from cluster.services.errors import ServiceError
from cluster.services.kafka import (
    KafkaService,
    kafka_round_trip,
    new_cluster_id,
    render_properties,
    server_properties,
)
from cluster.services.process import free_port


def _parse(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_the_broker_config_is_one_kraft_node_on_loopback_with_explicit_topics(
    tmp_path: Path,
) -> None:
    props = _parse(
        render_properties(
            server_properties(broker_port=19092, controller_port=19093, log_dir=tmp_path / "d")
        )
    )

    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == f"{props['node.id']}@127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["log.dirs"] == str(tmp_path / "d")
    assert props["auto.create.topics.enable"] == "false"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_every_replication_setting_fits_a_single_node() -> None:
    props = server_properties(broker_port=1, controller_port=2, log_dir=Path("/x"))

    for key, value in props.items():
        if key.endswith(("replication.factor", "min.isr", "min.insync.replicas")):
            assert value == "1", key
    assert props["offsets.topic.num.partitions"] == "1"
    assert props["num.partitions"] == "1"


def test_properties_escape_backslashes_in_values() -> None:
    assert render_properties({"log.dirs": r"C:\kafka"}) == "log.dirs=C:\\\\kafka\n"


def test_cluster_ids_are_fresh_16_byte_url_safe_ids() -> None:
    ids = {new_cluster_id() for _ in range(200)}

    assert len(ids) == 200
    for cluster_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)
        assert not cluster_id.startswith("-")
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def _fake_distribution(cache_dir: Path) -> None:
    home = cache_dir / "kafka-4.3.1"
    (home / "libs").mkdir(parents=True)
    (home / ".complete").write_text("fake\n")


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


async def test_a_broker_that_cannot_start_fails_fast_with_its_log_tail(tmp_path: Path) -> None:
    _fake_distribution(tmp_path / "cache")
    java = _script(
        tmp_path / "java",
        "import sys\nprint('Error: could not reserve enough space for the heap')\nsys.exit(1)\n",
    )
    service = KafkaService(tmp_path / "cache", java=java, ready_timeout_s=30)

    with pytest.raises(ServiceError) as failure:
        await service.start()

    assert "formatting storage failed with exit code 1" in str(failure.value)
    assert "could not reserve enough space" in failure.value.log_tail
    assert service.pid is None
    assert service.log_path is None  # the scratch directory is gone too


async def test_a_broker_that_dies_after_formatting_is_reported_with_its_exit_code(
    tmp_path: Path,
) -> None:
    _fake_distribution(tmp_path / "cache")
    java = _script(
        tmp_path / "java",
        "import sys\n"
        "if 'kafka.Kafka' in sys.argv:\n"
        "    print('FATAL [KafkaRaftServer] something broke', flush=True)\n"
        "    sys.exit(3)\n",
    )
    service = KafkaService(tmp_path / "cache", java=java, ready_timeout_s=30)

    with pytest.raises(ServiceError, match="exited with code 3 before it was ready") as failure:
        await service.start()

    assert "something broke" in str(failure.value)


async def test_a_round_trip_to_a_closed_port_is_a_service_error() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"

    with pytest.raises(ServiceError, match="round trip"):
        await kafka_round_trip(bootstrap, timeout_s=5)
    assert not await KafkaService.probe(bootstrap, timeout_s=5)
