"""Fetching artifacts from Maven Central with the machine's ``mvn`` (Kafka, Keycloak).

One bounded run of ``mvn`` with the dependency plugin, its failure told in one line
naming what was fetched and the command, with the tail of Maven's output beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shlex
from pathlib import Path

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
    command = shlex.join(argv)
    logger.info("fetching %s: %s", what, command)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise ServiceError(service, f"cannot run `{command}` to fetch {what}: {exc}") from exc
    try:
        async with asyncio.timeout(timeout_s):
            output, _ = await proc.communicate()
    except TimeoutError as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise ServiceError(
            service, f"fetching {what} took longer than {timeout_s:g} s; command: `{command}`"
        ) from exc
    tail = "\n".join(output.decode("utf-8", errors="replace").splitlines()[-30:])
    if proc.returncode != 0:
        raise ServiceError(
            service,
            f"could not fetch {what} (is Maven Central reachable?); "
            f"`{command}` exited with code {proc.returncode}",
            tail,
        )
    return tail
