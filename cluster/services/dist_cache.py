"""Programs the project fetches once into the raybus cache (Kafka, Keycloak): the shared
parts.

A distribution is assembled in a staging directory beside its final place (the same
filesystem, so the closing rename is atomic), marked complete, then renamed into place:
an interrupted download never counts as cached, and two processes fetching the same
version at once both end with one good copy. Staging directories left by killed fetches
are removed once they are older than the fetch's own time bound (a younger one may still
be in use). The commands a fetch runs (``mvn``, a build step) run through one bounded
runner that tells a failure in one line with the tail of the program's output beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cluster.services.errors import ServiceError

__all__ = ["CachedDirectory", "CommandFailed", "require_mvn", "run_bounded"]

_TAIL_LINES = 30


@dataclass(frozen=True)
class CachedDirectory:
    """One version of a distribution in the cache, e.g. ``<cache>/kafka-4.3.1``.

    Attributes:
        service: the service's name, for errors (``kafka``).
        cache_dir: the raybus cache directory.
        name: the directory's name in it (``kafka-4.3.1``).
        marker: the file whose presence says the copy is complete.
    """

    service: str
    cache_dir: Path
    name: str
    marker: str

    @property
    def path(self) -> Path:
        return self.cache_dir / self.name

    @property
    def complete(self) -> bool:
        return (self.path / self.marker).is_file()

    def begin_staging(self, *, stale_after_s: float) -> Path:
        """A fresh staging directory beside the final one; stale ones are removed first."""
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            now = time.time()
            for partial in self.cache_dir.glob(f".{self.service}-*.partial-*"):
                with contextlib.suppress(OSError):
                    if now - partial.stat().st_mtime > stale_after_s:
                        shutil.rmtree(partial, ignore_errors=True)
            return Path(tempfile.mkdtemp(prefix=f".{self.name}.partial-", dir=self.cache_dir))
        except OSError as exc:
            raise self._unwritable(exc) from exc

    def commit(self, staging: Path, marker_text: str) -> None:
        """Mark the staged copy complete and move it into place in one atomic rename."""
        try:
            (staging / self.marker).write_text(f"{marker_text}\n")
            if self.path.exists() and not self.complete:
                shutil.rmtree(self.path)  # an incomplete copy from before the marker existed
            try:
                staging.rename(self.path)
            except OSError:
                # Another process finished the same fetch first; its copy is as good.
                if not self.complete:
                    raise
        except OSError as exc:
            raise self._unwritable(exc) from exc

    def _unwritable(self, exc: OSError) -> ServiceError:
        return ServiceError(self.service, f"cannot write the cache in {self.cache_dir}: {exc}")


def require_mvn(service: str, mvn: str | None, *, fetching: str, into: Path) -> str:
    """The Maven executable to use (``mvn`` from ``PATH`` by default), or one clear error."""
    found = mvn or shutil.which("mvn")
    if found is None:
        raise ServiceError(
            service,
            f"Maven (`mvn`) is not on PATH; it is needed once to fetch {fetching} "
            f"from Maven Central into {into}",
        )
    return found


class CommandFailed(ServiceError):
    """A command ran and exited non-zero; ``returncode`` and ``tail`` say how."""

    def __init__(self, service: str, message: str, tail: str, returncode: int) -> None:
        super().__init__(service, message, tail)
        self.returncode = returncode


async def run_bounded(
    service: str,
    argv: list[str],
    *,
    cwd: Path,
    timeout_s: float,
    doing: str,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run ``argv`` in ``cwd`` within ``timeout_s``; returns the tail of its output.

    ``doing`` names the work for errors ("fetching X", "building Keycloak").

    Raises:
        ServiceError: it could not start or took too long (killed); :class:`CommandFailed`
            when it exited non-zero.
    """
    command = shlex.join(argv)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError as exc:
        raise ServiceError(service, f"cannot run `{command}` ({doing}): {exc}") from exc
    try:
        async with asyncio.timeout(timeout_s):
            output, _ = await proc.communicate()
    except TimeoutError as exc:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise ServiceError(
            service, f"{doing} took longer than {timeout_s:g} s; command: `{command}`"
        ) from exc
    tail = "\n".join(output.decode("utf-8", errors="replace").splitlines()[-_TAIL_LINES:])
    code = proc.returncode
    if code:  # communicate() has reaped it: an int, and 0 only on success
        raise CommandFailed(service, f"`{command}` exited with code {code}", tail, code)
    return tail
