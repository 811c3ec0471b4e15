"""Pinned npm packages installed once into the project's cache (the conformance suite and
its Node, the reference everything-server).

Installed into a staging directory beside ``home``, marked complete, then renamed into
place, so an interrupted install never counts as cached; a lock file keeps two test
sessions (or a test and ``make conformance``) from installing the same home at once.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["NpmMissing", "ensure_npm_packages"]

_COMPLETE_MARKER = ".complete"
# npm fetches ~60 MB on a cold cache; generous for a slow registry and a loaded machine.
_INSTALL_TIMEOUT_S = 600


class NpmMissing(RuntimeError):
    """This machine has no ``npm`` client, so nothing can be installed from npm."""


def ensure_npm_packages(home: Path, packages: list[str], expect: list[Path]) -> Path:
    """Install ``packages`` into ``home`` unless it is complete already; returns ``home``.

    ``expect`` names paths (relative to ``home``) a good install produces.

    Raises:
        NpmMissing: ``npm`` is not on ``PATH``.
        RuntimeError: the install failed or produced less than ``expect``; the message
            carries npm's output, so a broken registry or a bad pin is a failure.
    """
    if (home / _COMPLETE_MARKER).exists():
        return home
    npm = shutil.which("npm")
    if npm is None:
        raise NpmMissing(f"npm is not on PATH: {', '.join(packages)} install from npm")
    home.parent.mkdir(parents=True, exist_ok=True)
    with (home.parent / f".{home.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / _COMPLETE_MARKER).exists():  # another process finished it meanwhile
            return home
        staging = Path(tempfile.mkdtemp(prefix=f".{home.name}-", dir=home.parent))
        try:
            _install(npm, staging, packages, expect)
            (staging / _COMPLETE_MARKER).touch()
            shutil.rmtree(home, ignore_errors=True)
            staging.rename(home)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return home


def _install(npm: str, prefix: Path, packages: list[str], expect: list[Path]) -> None:
    (prefix / "package.json").write_text(
        f'{{"name": "raybus-{prefix.name.strip(".")}", "private": true}}\n'
    )
    completed = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", *packages],
        cwd=prefix,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=_INSTALL_TIMEOUT_S,
        check=False,
    )
    missing = [str(path) for path in expect if not (prefix / path).exists()]
    if completed.returncode != 0 or missing:
        raise RuntimeError(
            f"npm install of {' '.join(packages)} failed (exit {completed.returncode}, "
            f"missing {missing}):\n{completed.stdout[-3000:]}"
        )
