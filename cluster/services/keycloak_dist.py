"""Fetching the Keycloak server distribution from Maven Central into the raybus cache, once.

Keycloak is not on PyPI; its server distribution is on Maven Central as the tar.gz
artefact ``org.keycloak:keycloak-quarkus-dist``. The machine's ``mvn`` copies it
(``dependency:copy``, so Maven's own repository settings and mirrors apply) into a
staging directory beside ``<cache>/keycloak-<version>``, where it is unpacked, built once
(``kc.sh build``: Quarkus fixes the server's build-time options, here the embedded H2
database, so every start is an ``--optimized`` one, half a minute quicker on two cores),
marked complete and renamed into place: an interrupted download never counts as cached
(the same scheme as ``kafka_dist``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from cluster.services.dist_cache import CachedDirectory, require_mvn, run_bounded
from cluster.services.errors import ServiceError
from cluster.services.maven import DEPENDENCY_PLUGIN, fetch_with_maven

__all__ = [
    "BUILD_OPTIONS",
    "KEYCLOAK_VERSION",
    "KeycloakDistribution",
    "cached_distribution",
    "fetch_distribution",
    "keycloak_coordinates",
]

logger = logging.getLogger(__name__)

KEYCLOAK_VERSION = "26.5.6"
# Named for what it vouches for: unpacked *and* built (a copy without the build is not one).
_COMPLETE_MARKER = ".built"
# The options fixed at build time; a start with other build options would rebuild first.
BUILD_OPTIONS = ("--db=dev-file",)
_BUILD_TIMEOUT_S = 600.0
_SERVICE = "keycloak"


def keycloak_coordinates(version: str = KEYCLOAK_VERSION) -> str:
    """The Maven coordinates of the server distribution (``group:artifact:version:type``)."""
    return f"org.keycloak:keycloak-quarkus-dist:{version}:tar.gz"


@dataclass(frozen=True)
class KeycloakDistribution:
    """An unpacked Keycloak server in the cache (never run in place: it is copied).

    Attributes:
        home: the directory holding ``bin/kc.sh``, ``lib`` and ``conf``.
        version: the Keycloak version.
    """

    home: Path
    version: str


def _cached_directory(cache_dir: Path, version: str) -> CachedDirectory:
    return CachedDirectory(_SERVICE, cache_dir, f"keycloak-{version}", _COMPLETE_MARKER)


def _distribution(cache_dir: Path, version: str) -> KeycloakDistribution:
    home = _cached_directory(cache_dir, version).path / "dist"
    return KeycloakDistribution(home=home, version=version)


def cached_distribution(
    cache_dir: Path, version: str = KEYCLOAK_VERSION
) -> KeycloakDistribution | None:
    """The cached distribution, or None if it is absent or was never completed."""
    if _cached_directory(cache_dir, version).complete:
        return _distribution(cache_dir, version)
    return None


async def fetch_distribution(
    cache_dir: Path,
    version: str = KEYCLOAK_VERSION,
    *,
    mvn: str | None = None,
    java_home: str | None = None,
    timeout_s: float = 900.0,
) -> KeycloakDistribution:
    """Return the cached Keycloak distribution, downloading and building it if needed.

    Args:
        cache_dir: the raybus cache directory.
        version: the Keycloak version.
        mvn: the Maven executable; by default ``mvn`` from ``PATH``.
        java_home: the JDK ``kc.sh build`` runs with; by default ``java`` on ``PATH``.
        timeout_s: bound on the download (the build has its own).

    Raises:
        ServiceError: ``mvn`` is missing, failed (Maven Central unreachable, unknown
            version) or timed out, or the archive could not be unpacked or built.
    """
    directory = _cached_directory(cache_dir, version)
    if directory.complete:
        return _distribution(cache_dir, version)
    coordinates = keycloak_coordinates(version)
    mvn_path = require_mvn(_SERVICE, mvn, fetching=coordinates, into=directory.path)
    staging = directory.begin_staging(stale_after_s=timeout_s)
    try:
        archive = await _download(mvn_path, staging, version, timeout_s)
        await asyncio.to_thread(_unpack, archive, staging / "dist")
        archive.unlink()
        await _build(staging / "dist", java_home)
        directory.commit(staging, coordinates)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("cached Keycloak %s in %s", version, directory.path)
    return _distribution(cache_dir, version)


def _unpack(archive: Path, target: Path) -> None:
    """Unpack the archive's single top directory (``keycloak-<version>``) as ``target``."""
    unpacked = target.parent / "unpacked"
    try:
        unpacked.mkdir()
        with tarfile.open(archive, "r:gz") as tar:
            # The "data" filter refuses absolute paths, links out of the tree and devices.
            tar.extractall(unpacked, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise ServiceError(_SERVICE, f"cannot unpack {archive.name}: {exc}") from exc
    tops = list(unpacked.iterdir())
    if len(tops) != 1 or not (tops[0] / "bin" / "kc.sh").is_file():
        raise ServiceError(_SERVICE, f"{archive.name} does not hold a Keycloak server (bin/kc.sh)")
    tops[0].rename(target)
    unpacked.rmdir()


async def _build(home: Path, java_home: str | None) -> None:
    argv = [str(home / "bin" / "kc.sh"), "build", *BUILD_OPTIONS]
    env = dict(os.environ)
    if java_home is not None:
        env["JAVA_HOME"] = java_home
    logger.info("building Keycloak once: %s", shlex.join(argv))
    await run_bounded(
        _SERVICE, argv, cwd=home, env=env, timeout_s=_BUILD_TIMEOUT_S, doing="building Keycloak"
    )


async def _download(mvn: str, staging: Path, version: str, timeout_s: float) -> Path:
    argv = [
        mvn,
        "-B",
        "-q",
        f"{DEPENDENCY_PLUGIN}:copy",
        f"-Dartifact={keycloak_coordinates(version)}",
        f"-DoutputDirectory={staging}",
    ]
    command = shlex.join(argv)
    what = f"{keycloak_coordinates(version)} from Maven Central"
    tail = await fetch_with_maven(_SERVICE, argv, cwd=staging, what=what, timeout_s=timeout_s)
    archive = staging / f"keycloak-quarkus-dist-{version}.tar.gz"
    if not archive.is_file():
        raise ServiceError(
            _SERVICE, f"`{command}` succeeded but did not produce {archive.name}", tail
        )
    return archive
