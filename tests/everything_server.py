"""The reference TypeScript server (``@modelcontextprotocol/server-everything``), pinned,
installed from npm into the project's cache, and run in its Streamable HTTP mode.

Installed like the conformance suite (:mod:`tests.conformance.runner`): into a staging
directory, marked complete, then renamed into ``<cache>/server-everything-<version>``,
so an interrupted install never counts as cached; a lock keeps two sessions from
installing at once. Needs ``node`` and ``npm`` on ``PATH`` (tests skip without them).
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import tempfile
from pathlib import Path

from cluster.services.state import default_cache_dir

__all__ = ["EVERYTHING_VERSION", "ensure_everything", "everything_http_command"]

EVERYTHING_VERSION = "2026.8.31"  # the pin of the stdio test (test_bus_npx_everything)
_PACKAGE = "@modelcontextprotocol/server-everything"
_ENTRY = Path("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
_COMPLETE_MARKER = ".complete"
_INSTALL_TIMEOUT_S = 600  # a cold npm cache on a slow registry and a loaded machine
_LOOPBACK_ONLY = Path(__file__).resolve().parent / "cluster" / "loopback_only.mjs"


def ensure_everything(cache_dir: Path | None = None) -> Path:
    """Install the pinned server unless cached; returns its entry script.

    Raises:
        RuntimeError: npm is missing or the install failed (with npm's output).
    """
    home = (cache_dir or default_cache_dir()) / f"server-everything-{EVERYTHING_VERSION}"
    if (home / _COMPLETE_MARKER).exists():
        return home / _ENTRY
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not on PATH: server-everything installs from npm")
    home.parent.mkdir(parents=True, exist_ok=True)
    with (home.parent / f".{home.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (home / _COMPLETE_MARKER).exists():  # another process may have finished
            staging = Path(tempfile.mkdtemp(prefix=f".{home.name}-", dir=home.parent))
            try:
                _npm_install(npm, staging)
                (staging / _COMPLETE_MARKER).touch()
                shutil.rmtree(home, ignore_errors=True)
                staging.rename(home)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return home / _ENTRY


def _npm_install(npm: str, prefix: Path) -> None:
    (prefix / "package.json").write_text('{"name": "raybus-everything", "private": true}\n')
    pinned = f"{_PACKAGE}@{EVERYTHING_VERSION}"
    completed = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", pinned],
        cwd=prefix,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=_INSTALL_TIMEOUT_S,
        check=False,
    )
    if completed.returncode != 0 or not (prefix / _ENTRY).exists():
        raise RuntimeError(
            f"npm install of {_PACKAGE}@{EVERYTHING_VERSION} failed "
            f"(exit {completed.returncode}):\n{completed.stdout[-3000:]}"
        )


def everything_http_command(entry: Path, node: str) -> list[str]:
    """The command serving ``entry`` over Streamable HTTP on ``$PORT``, loopback only."""
    return [node, "--import", _LOOPBACK_ONLY.as_uri(), str(entry), "streamableHttp"]
