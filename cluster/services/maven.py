"""Fetching artifacts from Maven Central with the machine's ``mvn`` (Kafka, Keycloak).

One bounded run of ``mvn`` with the dependency plugin, its failure told in one line
naming what was fetched and the command, with the tail of Maven's output beside it.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

from cluster.services.dist_cache import CommandFailed, run_bounded
from cluster.services.errors import ServiceError

__all__ = ["DEPENDENCY_PLUGIN", "fetch_with_maven"]

logger = logging.getLogger(__name__)

# Pinned: the plugin Maven would otherwise resolve changes under us.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


async def fetch_with_maven(
    service: str, argv: list[str], *, cwd: Path, what: str, timeout_s: float
) -> str:
    """Run ``argv`` (an ``mvn`` command) in ``cwd`` within ``timeout_s``; returns the tail
    of its output.

    Raises:
        ServiceError: it could not run, took too long or failed (naming ``what``).
    """
    logger.info("fetching %s: %s", what, shlex.join(argv))
    try:
        return await run_bounded(
            service, argv, cwd=cwd, timeout_s=timeout_s, doing=f"fetching {what}"
        )
    except CommandFailed as failed:
        raise ServiceError(
            service,
            f"could not fetch {what} (is Maven Central reachable?); "
            f"`{shlex.join(argv)}` exited with code {failed.returncode}",
            failed.log_tail,
        ) from failed
