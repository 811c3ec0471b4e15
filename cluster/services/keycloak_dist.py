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
import contextlib
import logging
import os
import shlex
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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


def _root(cache_dir: Path, version: str) -> Path:
    return cache_dir / f"keycloak-{version}"


def _distribution(cache_dir: Path, version: str) -> KeycloakDistribution:
    return KeycloakDistribution(home=_root(cache_dir, version) / "dist", version=version)


def cached_distribution(
    cache_dir: Path, version: str = KEYCLOAK_VERSION
) -> KeycloakDistribution | None:
    """The cached distribution, or None if it is absent or was never completed."""
    if (_root(cache_dir, version) / _COMPLETE_MARKER).is_file():
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
    cached = cached_distribution(cache_dir, version)
    if cached is not None:
        return cached
    mvn_path = mvn or shutil.which("mvn")
    if mvn_path is None:
        raise ServiceError(
            _SERVICE,
            f"Maven (`mvn`) is not on PATH; it is needed once to fetch "
            f"{keycloak_coordinates(version)} from Maven Central into {_root(cache_dir, version)}",
        )
    staging = _begin_staging(cache_dir, version, stale_after_s=timeout_s)
    try:
        archive = await _download(mvn_path, staging, version, timeout_s)
        await asyncio.to_thread(_unpack, archive, staging / "dist")
        archive.unlink()
        await _build(staging / "dist", java_home)
        _commit(staging, cache_dir, version)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("cached Keycloak %s in %s", version, _root(cache_dir, version))
    return _distribution(cache_dir, version)


def _begin_staging(cache_dir: Path, version: str, *, stale_after_s: float) -> Path:
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for partial in cache_dir.glob(".keycloak-*.partial-*"):
            with contextlib.suppress(OSError):
                if now - partial.stat().st_mtime > stale_after_s:
                    shutil.rmtree(partial, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=f".keycloak-{version}.partial-", dir=cache_dir))
    except OSError as exc:
        raise ServiceError(_SERVICE, f"cannot write the cache in {cache_dir}: {exc}") from exc


def _commit(staging: Path, cache_dir: Path, version: str) -> None:
    try:
        (staging / _COMPLETE_MARKER).write_text(f"{keycloak_coordinates(version)}\n")
        root = _root(cache_dir, version)
        if root.exists() and cached_distribution(cache_dir, version) is None:
            shutil.rmtree(root)  # an incomplete copy
        try:
            staging.rename(root)
        except OSError:
            # Another process finished the same download first; its copy is as good.
            if cached_distribution(cache_dir, version) is None:
                raise
    except OSError as exc:
        raise ServiceError(_SERVICE, f"cannot write the cache in {cache_dir}: {exc}") from exc


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
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=home,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise ServiceError(_SERVICE, f"cannot run `{shlex.join(argv)}`: {exc}") from exc
    try:
        async with asyncio.timeout(_BUILD_TIMEOUT_S):
            output, _ = await proc.communicate()
    except TimeoutError as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise ServiceError(
            _SERVICE, f"`{shlex.join(argv)}` took longer than {_BUILD_TIMEOUT_S:g} s"
        ) from exc
    if proc.returncode != 0:
        tail = "\n".join(output.decode("utf-8", errors="replace").splitlines()[-30:])
        raise ServiceError(
            _SERVICE, f"`{shlex.join(argv)}` exited with code {proc.returncode}", tail
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
