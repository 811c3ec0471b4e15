"""The official SDK's own conformance fixture server, fetched from PyPI, unmodified.

python-sdk keeps the server the conformance suite was written against in
``examples/servers/everything-server`` (package ``mcp_everything_server``). It is not
published as a package of its own, but the ``mcp`` source distribution on PyPI carries it,
so the copy matching the installed SDK is taken from there into the raybus cache, once,
and never edited: serving it through the bus shows conformance on a server we did not
write. The copy is atomic (staging directory, marker, rename), like the Kafka jars.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

from cluster.services.state import default_cache_dir

__all__ = ["PACKAGE", "SERVER_OBJECT", "everything_server_dir"]

PACKAGE = "mcp_everything_server"
SERVER_OBJECT = f"{PACKAGE}.server:mcp"
"""The ``MCPServer`` the example builds at import, as a pool's ``server:`` path."""

_EXAMPLE_DIR = f"examples/servers/everything-server/{PACKAGE}/"
_COMPLETE_MARKER = ".complete"
_DOWNLOAD_TIMEOUT_S = 300


def everything_server_dir(cache_dir: Path | None = None) -> Path:
    """A directory holding ``mcp_everything_server/`` of the installed ``mcp`` release.

    Put it on ``sys.path`` (or in a pool's ``runtime_env.py_modules``, as the package
    directory itself) to import :data:`SERVER_OBJECT`.

    Raises:
        RuntimeError: pip could not download the sdist, or it holds no such example.
    """
    sdk_version = version("mcp")
    home = (cache_dir or default_cache_dir()) / f"everything-server-mcp-{sdk_version}"
    if (home / _COMPLETE_MARKER).exists():
        return home
    home.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{home.name}-", dir=home.parent))
    try:
        sdist = _download_sdist(sdk_version, staging)
        _extract_example(sdist, staging)
        sdist.unlink()
        (staging / _COMPLETE_MARKER).touch()
        shutil.rmtree(home, ignore_errors=True)
        staging.rename(home)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return home


def _download_sdist(sdk_version: str, into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--no-binary", ":all:", "--dest", str(into), f"mcp=={sdk_version}"]
    completed = subprocess.run(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=_DOWNLOAD_TIMEOUT_S,
        check=False,
    )
    found = sorted(into.glob("mcp-*.tar.gz"))
    if completed.returncode != 0 or not found:
        raise RuntimeError(
            f"pip could not download the mcp {sdk_version} sdist:\n{completed.stdout[-2000:]}"
        )
    return found[0]


def _extract_example(sdist: Path, into: Path) -> None:
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if _EXAMPLE_DIR in m.name and m.isfile()]
        if not members:
            raise RuntimeError(f"{sdist.name} holds no {_EXAMPLE_DIR}")
        target = into / PACKAGE
        target.mkdir()
        for member in members:
            relative = member.name.split(_EXAMPLE_DIR, 1)[1]
            source = archive.extractfile(member)
            if source is None or "/" in relative or relative.startswith("."):
                continue  # only the package's own flat files; nothing may escape `target`
            (target / relative).write_bytes(source.read())
