"""Fetching Apache Kafka's jars from Maven Central into the raybus cache, once.

Kafka is not on PyPI, and the Apache download mirrors are not reachable from every
machine, so the broker is assembled from Maven Central with the machine's ``mvn``: a
generated pom naming ``org.apache.kafka:kafka_2.13`` plus the log4j2 binding for slf4j
(Kafka's own tarball ships it; the Maven artefact leaves the choice to the user), copied
with ``dependency:copy-dependencies`` into ``<cache>/kafka-<version>/libs``.

The copy is atomic: it is assembled in a staging directory next to the final one, marked
complete, then renamed into place, so an interrupted download never counts as cached.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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


def _home(cache_dir: Path, version: str) -> Path:
    return cache_dir / f"kafka-{version}"


def cached_distribution(cache_dir: Path, version: str = KAFKA_VERSION) -> KafkaDistribution | None:
    """The cached distribution, or None if it is absent or was never completed."""
    home = _home(cache_dir, version)
    if (home / _COMPLETE_MARKER).is_file():
        return KafkaDistribution(home=home, version=version)
    return None


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
    cached = cached_distribution(cache_dir, version)
    if cached is not None:
        return cached
    mvn_path = mvn or shutil.which("mvn")
    if mvn_path is None:
        raise ServiceError(
            _SERVICE,
            f"Maven (`mvn`) is not on PATH; it is needed once to fetch "
            f"{kafka_coordinates(version)} from Maven Central into {_home(cache_dir, version)}",
        )
    staging = _begin_staging(cache_dir, version, stale_after_s=timeout_s)
    try:
        await _download(mvn_path, staging, version, timeout_s)
        _commit(staging, cache_dir, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("cached Kafka %s in %s", version, _home(cache_dir, version))
    return KafkaDistribution(home=_home(cache_dir, version), version=version)


def _begin_staging(cache_dir: Path, version: str, *, stale_after_s: float) -> Path:
    """A fresh staging directory beside the final one (same filesystem: rename is atomic)."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(cache_dir, older_than_s=stale_after_s)
        return Path(tempfile.mkdtemp(prefix=f".kafka-{version}.partial-", dir=cache_dir))
    except OSError as exc:
        raise ServiceError(_SERVICE, f"cannot write the Kafka cache in {cache_dir}: {exc}") from exc


def _commit(staging: Path, cache_dir: Path, version: str) -> None:
    """Mark the staged copy complete and move it into place in one atomic rename."""
    try:
        (staging / _COMPLETE_MARKER).write_text(f"{kafka_coordinates(version)}\n")
        home = _home(cache_dir, version)
        if home.exists() and cached_distribution(cache_dir, version) is None:
            shutil.rmtree(home)  # an incomplete copy from before the marker existed
        try:
            staging.rename(_home(cache_dir, version))
        except OSError:
            # Another process finished the same download first; its copy is as good.
            if cached_distribution(cache_dir, version) is None:
                raise
    except OSError as exc:
        raise ServiceError(_SERVICE, f"cannot write the Kafka cache in {cache_dir}: {exc}") from exc


def _remove_stale_partials(cache_dir: Path, *, older_than_s: float) -> None:
    """Delete staging dirs left by killed downloads; younger ones may still be in use."""
    now = time.time()
    for partial in cache_dir.glob(".kafka-*.partial-*"):
        with contextlib.suppress(OSError):
            if now - partial.stat().st_mtime > older_than_s:
                shutil.rmtree(partial, ignore_errors=True)


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
