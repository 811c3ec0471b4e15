"""Fetching and caching the Kafka jars, with a stand-in ``mvn`` (no network)."""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cluster.services.errors import ServiceError
from cluster.services.kafka_dist import (
    KAFKA_VERSION,
    cached_distribution,
    fetch_distribution,
    kafka_coordinates,
    render_pom,
)

# Behaves like `mvn dependency:copy-dependencies`: writes the server jar into the
# -DoutputDirectory it is given, and counts its calls.
_GOOD_MVN = """
import pathlib, sys
out = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("-DoutputDirectory="))
pathlib.Path(out).mkdir(parents=True)
pathlib.Path(out, "kafka_2.13-4.3.1.jar").write_bytes(b"PK")
with open(pathlib.Path(sys.argv[0]).with_suffix(".calls"), "a") as calls:
    calls.write("called\\n")
"""

_OFFLINE_MVN = """
import sys
print("[ERROR] Failed to execute goal: Could not transfer artifact"
      " org.apache.kafka:kafka_2.13:pom:4.3.1 from/to central: Connection refused")
sys.exit(1)
"""


def _mvn(tmp_path: Path, body: str) -> str:
    path = tmp_path / "bin" / "mvn"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


def test_the_pom_asks_for_kafka_and_a_log4j2_slf4j_binding() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.fromstring(render_pom())
    dependencies = {
        (d.findtext("m:groupId", namespaces=ns), d.findtext("m:artifactId", namespaces=ns))
        for d in root.iterfind("m:dependencies/m:dependency", ns)
    }

    assert ("org.apache.kafka", "kafka_2.13") in dependencies
    assert ("org.apache.logging.log4j", "log4j-slf4j-impl") in dependencies
    assert kafka_coordinates() == "org.apache.kafka:kafka_2.13:4.3.1"


async def test_the_first_fetch_fills_the_cache_and_later_ones_do_not_download(
    tmp_path: Path,
) -> None:
    mvn = _mvn(tmp_path, _GOOD_MVN)
    cache = tmp_path / "cache"

    first = await fetch_distribution(cache, mvn=mvn)
    second = await fetch_distribution(cache, mvn=mvn)

    assert first == second == cached_distribution(cache)
    assert (first.libs / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()
    assert first.classpath == f"{first.libs}/*"
    assert (tmp_path / "bin" / "mvn.calls").read_text().count("called") == 1
    assert sorted(p.name for p in cache.iterdir()) == [f"kafka-{KAFKA_VERSION}"]


async def test_an_unreachable_maven_central_names_the_coordinates_and_the_command(
    tmp_path: Path,
) -> None:
    mvn = _mvn(tmp_path, _OFFLINE_MVN)
    cache = tmp_path / "cache"

    with pytest.raises(ServiceError) as failure:
        await fetch_distribution(cache, mvn=mvn)

    message = str(failure.value)
    assert "org.apache.kafka:kafka_2.13:4.3.1" in message
    assert "Maven Central" in message
    assert f"{mvn} -B -q -f" in message
    assert "copy-dependencies" in message
    assert "Connection refused" in failure.value.log_tail
    # A failed download never counts as cached and leaves nothing half-finished behind.
    assert cached_distribution(cache) is None
    assert list(cache.iterdir()) == []


async def test_a_download_that_produces_no_kafka_jar_is_not_cached(tmp_path: Path) -> None:
    mvn = _mvn(tmp_path, "")

    with pytest.raises(ServiceError, match=re.escape("did not produce kafka_2.13-4.3.1.jar")):
        await fetch_distribution(tmp_path / "cache", mvn=mvn)
    assert cached_distribution(tmp_path / "cache") is None


async def test_a_hanging_download_is_bounded(tmp_path: Path) -> None:
    mvn = _mvn(tmp_path, "import signal\nsignal.pause()\n")

    with pytest.raises(ServiceError, match=re.escape("took longer than 0.5 s")):
        await fetch_distribution(tmp_path / "cache", mvn=mvn, timeout_s=0.5)
    assert cached_distribution(tmp_path / "cache") is None
