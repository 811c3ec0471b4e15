"""Fetching Keycloak's distribution into the cache, with stand-in `mvn` executables (the
real download is exercised by the Keycloak session fixture)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from cluster.services.errors import ServiceError
from cluster.services.keycloak_dist import (
    KEYCLOAK_VERSION,
    cached_distribution,
    fetch_distribution,
    keycloak_coordinates,
)

# Behaves like `mvn dependency:copy`: writes the artefact (a tar.gz holding
# keycloak-<version>/bin/kc.sh) into -DoutputDirectory, and counts its calls.
_GOOD_MVN = f"""
import io, pathlib, sys, tarfile
out = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("-DoutputDirectory="))
archive = pathlib.Path(out, "keycloak-quarkus-dist-{KEYCLOAK_VERSION}.tar.gz")
with tarfile.open(archive, "w:gz") as tar:
    data = b"#!/bin/sh\\n"
    info = tarfile.TarInfo("keycloak-{KEYCLOAK_VERSION}/bin/kc.sh")
    info.size, info.mode = len(data), 0o755
    tar.addfile(info, io.BytesIO(data))
with open(pathlib.Path(sys.argv[0]).with_suffix(".calls"), "a") as calls:
    calls.write("called\\n")
"""

_NOT_KEYCLOAK_MVN = f"""
import pathlib, sys, tarfile
out = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("-DoutputDirectory="))
archive = pathlib.Path(out, "keycloak-quarkus-dist-{KEYCLOAK_VERSION}.tar.gz")
with tarfile.open(archive, "w:gz"):
    pass
"""


def _mvn(tmp_path: Path, body: str) -> str:
    path = tmp_path / "bin" / "mvn"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return str(path)


async def test_the_first_fetch_unpacks_into_the_cache_and_later_ones_do_not_download(
    tmp_path: Path,
) -> None:
    mvn = _mvn(tmp_path, _GOOD_MVN)
    cache = tmp_path / "cache"

    first = await fetch_distribution(cache, mvn=mvn)
    second = await fetch_distribution(cache, mvn=mvn)

    assert first == second == cached_distribution(cache)
    launcher = first.home / "bin" / "kc.sh"
    assert launcher.is_file()
    assert launcher.stat().st_mode & 0o111  # still executable
    assert (tmp_path / "bin" / "mvn.calls").read_text().count("called") == 1
    assert sorted(p.name for p in cache.iterdir()) == [f"keycloak-{KEYCLOAK_VERSION}"]
    # Only the unpacked server is kept, not the archive.
    assert not list(cache.rglob("*.tar.gz"))


async def test_a_failed_download_names_the_coordinates_and_caches_nothing(tmp_path: Path) -> None:
    mvn = _mvn(tmp_path, "import sys\nprint('[ERROR] Connection refused')\nsys.exit(1)\n")
    cache = tmp_path / "cache"

    with pytest.raises(ServiceError) as failure:
        await fetch_distribution(cache, mvn=mvn)

    assert keycloak_coordinates() in str(failure.value)
    assert "Maven Central" in str(failure.value)
    assert "Connection refused" in failure.value.log_tail
    assert cached_distribution(cache) is None
    assert list(cache.iterdir()) == []


async def test_an_archive_without_a_keycloak_server_is_not_cached(tmp_path: Path) -> None:
    mvn = _mvn(tmp_path, _NOT_KEYCLOAK_MVN)

    with pytest.raises(ServiceError, match=re.escape("does not hold a Keycloak server")):
        await fetch_distribution(tmp_path / "cache", mvn=mvn)
    assert cached_distribution(tmp_path / "cache") is None


async def test_a_hanging_download_is_bounded(tmp_path: Path) -> None:
    mvn = _mvn(tmp_path, "import signal\nsignal.pause()\n")

    with pytest.raises(ServiceError, match=re.escape("took longer than 0.5 s")):
        await fetch_distribution(tmp_path / "cache", mvn=mvn, timeout_s=0.5)
    assert cached_distribution(tmp_path / "cache") is None
