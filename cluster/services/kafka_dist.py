"""Fetching Apache Kafka's jars from Maven Central into the raybus cache, once.

Kafka is not on PyPI, and the Apache download mirrors are not reachable from every
machine, so the broker is assembled from Maven Central with the machine's ``mvn``: a
generated pom naming ``org.apache.kafka:kafka_2.13`` plus the log4j2 binding for slf4j
(Kafka's own tarball ships it; the Maven artefact leaves the choice to the user), copied
with ``dependency:copy-dependencies`` into ``<cache>/kafka-<version>/libs``.

The copy is atomic (``dist_cache``): assembled in a staging directory next to the final
one, marked complete, then renamed into place, so an interrupted download never counts.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from cluster.services.dist_cache import CachedDirectory, require_mvn
from cluster.services.errors import ServiceError
from cluster.services.maven import DEPENDENCY_PLUGIN, fetch_with_maven

__all__ = [
    "KAFKA_VERSION",
    "KafkaDistribution",
    "cached_distribution",
    "fetch_distribution",
    "kafka_coordinates",
    "render_pom",
]

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.3.1"
SCALA_VERSION = "2.13"
# Kafka 4.3.1 depends on log4j-core 2.25.4 and slf4j-api 1.7.x; the binding must match both.
LOG4J_VERSION = "2.25.4"
# Pinned so a fresh machine resolves exactly what was tested, not the Maven default.
_COMPLETE_MARKER = ".complete"
_SERVICE = "kafka"


def kafka_coordinates(version: str = KAFKA_VERSION) -> str:
    """The Maven coordinates of the Kafka server artefact."""
    return f"org.apache.kafka:kafka_{SCALA_VERSION}:{version}"


@dataclass(frozen=True)
class KafkaDistribution:
    """A complete set of Kafka runtime jars in the cache.

    Attributes:
        home: ``<cache>/kafka-<version>``.
        version: the Kafka version.
    """

    home: Path
    version: str

    @property
    def libs(self) -> Path:
        """The directory holding every runtime jar."""
        return self.home / "libs"

    @property
    def classpath(self) -> str:
        """A ``java -cp`` argument naming every jar (the JVM expands ``dir/*``)."""
        return f"{self.libs}{os.sep}*"


def render_pom(version: str = KAFKA_VERSION, log4j_version: str = LOG4J_VERSION) -> str:
    """A throwaway pom whose runtime dependencies are exactly a runnable Kafka broker."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.raybus.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j_version}</version>
    </dependency>
  </dependencies>
</project>
"""


def _cached_directory(cache_dir: Path, version: str) -> CachedDirectory:
    return CachedDirectory(_SERVICE, cache_dir, f"kafka-{version}", _COMPLETE_MARKER)


def cached_distribution(cache_dir: Path, version: str = KAFKA_VERSION) -> KafkaDistribution | None:
    """The cached distribution, or None if it is absent or was never completed."""
    directory = _cached_directory(cache_dir, version)
    return KafkaDistribution(home=directory.path, version=version) if directory.complete else None


async def fetch_distribution(
    cache_dir: Path,
    version: str = KAFKA_VERSION,
    *,
    mvn: str | None = None,
    timeout_s: float = 900.0,
) -> KafkaDistribution:
    """Return the cached Kafka distribution, downloading it with ``mvn`` if needed.

    Args:
        cache_dir: the raybus cache directory.
        version: the Kafka version.
        mvn: the Maven executable; by default ``mvn`` from ``PATH``.
        timeout_s: bound on the download.

    Raises:
        ServiceError: ``mvn`` is missing, failed (Maven Central unreachable, unknown
            version) or timed out; the message names the coordinates and the command.
    """
    directory = _cached_directory(cache_dir, version)
    if directory.complete:
        return KafkaDistribution(home=directory.path, version=version)
    mvn_path = require_mvn(_SERVICE, mvn, fetching=kafka_coordinates(version), into=directory.path)
    staging = directory.begin_staging(stale_after_s=timeout_s)
    try:
        await _download(mvn_path, staging, version, timeout_s)
        directory.commit(staging, kafka_coordinates(version))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("cached Kafka %s in %s", version, directory.path)
    return KafkaDistribution(home=directory.path, version=version)


async def _download(mvn: str, staging: Path, version: str, timeout_s: float) -> None:
    pom = staging / "pom.xml"
    pom.write_text(render_pom(version), encoding="utf-8")
    libs = staging / "libs"
    argv = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={libs}",
    ]
    command = shlex.join(argv)
    what = f"{kafka_coordinates(version)} (+ log4j-slf4j-impl {LOG4J_VERSION}) from Maven Central"
    tail = await fetch_with_maven(_SERVICE, argv, cwd=staging, what=what, timeout_s=timeout_s)
    server_jar = libs / f"kafka_{SCALA_VERSION}-{version}.jar"
    if not server_jar.is_file():
        raise ServiceError(
            _SERVICE, f"`{command}` succeeded but did not produce {server_jar.name}", tail
        )
