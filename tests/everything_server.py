"""The reference TypeScript server (``@modelcontextprotocol/server-everything``), pinned,
installed from npm into the project's cache, and run in its Streamable HTTP mode.

Installed like the conformance suite, by :mod:`tests.npm_packages`, into
``<cache>/server-everything-<version>``. Needs ``node`` and ``npm`` on ``PATH`` (tests
skip without them).
"""

from __future__ import annotations

from pathlib import Path

from cluster.services.state import default_cache_dir
from tests.npm_packages import ensure_npm_packages

__all__ = ["EVERYTHING_VERSION", "ensure_everything", "everything_http_command"]

EVERYTHING_VERSION = "2026.8.31"  # the pin of the stdio test (test_bus_npx_everything)
_PACKAGE = "@modelcontextprotocol/server-everything"
_ENTRY = Path("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
_LOOPBACK_ONLY = Path(__file__).resolve().parent / "cluster" / "loopback_only.mjs"


def ensure_everything(cache_dir: Path | None = None) -> Path:
    """Install the pinned server unless cached; returns its entry script.

    Raises:
        RuntimeError: npm is missing or the install failed (with npm's output).
    """
    home = (cache_dir or default_cache_dir()) / f"server-everything-{EVERYTHING_VERSION}"
    pinned = f"{_PACKAGE}@{EVERYTHING_VERSION}"
    return ensure_npm_packages(home, [pinned], [_ENTRY]) / _ENTRY


def everything_http_command(entry: Path, node: str) -> list[str]:
    """The command serving ``entry`` over Streamable HTTP on ``$PORT``, loopback only."""
    return [node, "--import", _LOOPBACK_ONLY.as_uri(), str(entry), "streamableHttp"]
