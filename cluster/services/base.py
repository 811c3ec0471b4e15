"""The life cycle every local service shares: scratch dir, spawn, wait until ready, stop.

A concrete service says how to prepare (e.g. fetch Kafka), how to launch in a scratch
directory, and how to probe an endpoint; :class:`LocalService` does the rest: it retries
when a freshly chosen port was taken meanwhile, fails fast with the log tail when the
process dies, and bounds every wait.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from cluster.services.errors import ServiceError
from cluster.services.process import (
    log_tail,
    pid_start_ticks,
    poll_until,
    spawn,
    stop_process,
)
from cluster.services.state import ServiceName, ServiceRecord

__all__ = ["Launch", "LocalService"]

logger = logging.getLogger(__name__)

_LOG_NAME = "service.log"
_BIND_ATTEMPTS = 3
_ADDRESS_IN_USE = "Address already in use"
_PROBE_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Launch:
    """How to run a service once prepared: the command, its endpoint and environment."""

    argv: tuple[str, ...]
    endpoint: str
    env: dict[str, str] | None = None


class _PortTaken(Exception):
    """Internal: the port chosen for this attempt was taken before the service bound it."""


class LocalService(abc.ABC):
    """A service process on 127.0.0.1 that this object starts, waits for and stops.

    Args:
        ready_timeout_s: how long :meth:`start` waits for the service to answer.
        stop_grace_s: how long a clean shutdown may take before SIGKILL.
    """

    name: ClassVar[ServiceName]
    env_var: ClassVar[str]

    def __init__(self, *, ready_timeout_s: float, stop_grace_s: float = 30.0) -> None:
        self._ready_timeout_s = ready_timeout_s
        self._stop_grace_s = stop_grace_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_dir: Path | None = None
        self._endpoint: str | None = None
        self.ready_after_s: float | None = None
        """Seconds from the start of :meth:`start` to ready (fetching included)."""

    @property
    def endpoint(self) -> str:
        """Where clients connect.

        Raises:
            ServiceError: the service is not running.
        """
        if self._endpoint is None:
            raise ServiceError(self.name, "not started")
        return self._endpoint

    @property
    def log_path(self) -> Path | None:
        """The service's log file while it runs, else None."""
        return None if self._run_dir is None else self._run_dir / _LOG_NAME

    @property
    def pid(self) -> int | None:
        """The service's process id while it runs, else None."""
        return None if self._proc is None else self._proc.pid

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the service's log (``""`` when not running)."""
        return log_tail(self.log_path, lines)

    @classmethod
    @abc.abstractmethod
    async def probe(cls, endpoint: str, *, timeout_s: float) -> bool:
        """Whether a service at ``endpoint`` answers a real client request within a bound."""

    async def _prepare(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Work done once before the first launch (e.g. fetching binaries)."""

    @abc.abstractmethod
    async def _launch(self, run_dir: Path, log_path: Path) -> Launch:
        """Pick ports, write configuration into ``run_dir``; return what to run."""

    async def _answers(self, endpoint: str) -> bool:
        """One bounded readiness try."""
        return await self.probe(endpoint, timeout_s=_PROBE_TIMEOUT_S)

    async def start(self) -> None:
        """Prepare, launch and wait until the service answers.

        Raises:
            ServiceError: it could not be prepared or launched, it exited early, or it did
                not answer within ``ready_timeout_s``; the message ends with its log tail.
        """
        if self._proc is not None:
            raise ServiceError(self.name, f"already running at {self._endpoint}")
        started = time.monotonic()
        await self._prepare()
        for attempt in range(1, _BIND_ATTEMPTS + 1):
            self._run_dir = Path(tempfile.mkdtemp(prefix=f"raybus-{self.name}-"))
            try:
                log_path = self._run_dir / _LOG_NAME
                launch = await self._launch(self._run_dir, log_path)
                self._proc = spawn(
                    launch.argv, log_path=log_path, cwd=self._run_dir, env=launch.env
                )
                self._endpoint = launch.endpoint
                logger.info("started %s (pid %d) at %s", self.name, self._proc.pid, self._endpoint)
                await self._wait_ready()
            except _PortTaken:
                logger.info("%s: a port was taken before it bound (try %d)", self.name, attempt)
                await self.stop()
                continue
            except BaseException:
                await self.stop()
                raise
            self.ready_after_s = time.monotonic() - started
            logger.info("%s ready after %.1f s", self.name, self.ready_after_s)
            return
        raise ServiceError(self.name, f"ports were taken {_BIND_ATTEMPTS} times in a row")

    async def _wait_ready(self) -> None:
        proc, endpoint = self._proc, self.endpoint
        assert proc is not None

        def fail_if_exited() -> None:
            code = proc.poll()
            if code is not None:
                tail = self.log_tail()
                if _ADDRESS_IN_USE in tail:
                    raise _PortTaken
                raise ServiceError(self.name, f"exited with code {code} before it was ready", tail)

        async def exited() -> bool:
            return proc.poll() is not None

        async def ready() -> bool:
            fail_if_exited()
            # Race the probe against the process dying: a probe can hang on a port that
            # someone else holds, while our process has already failed to bind it.
            probe = asyncio.create_task(self._answers(endpoint))
            watch = asyncio.create_task(poll_until(exited, timeout_s=_PROBE_TIMEOUT_S))
            try:
                await asyncio.wait((probe, watch), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (probe, watch):
                    task.cancel()
                await asyncio.gather(probe, watch, return_exceptions=True)
            # Answers from whoever holds the port count only while our process runs.
            fail_if_exited()
            return probe.done() and not probe.cancelled() and probe.result()

        try:
            await poll_until(ready, timeout_s=self._ready_timeout_s, max_delay_s=0.5)
        except TimeoutError as exc:
            raise ServiceError(
                self.name,
                f"not ready within {self._ready_timeout_s:g} s at {endpoint}",
                self.log_tail(),
            ) from exc

    async def stop(self) -> None:
        """Stop the process (TERM, then KILL) and remove its scratch directory; idempotent.

        Raises:
            ServiceError: the process could not be stopped.
        """
        proc, run_dir = self._proc, self._run_dir
        self._proc = self._run_dir = self._endpoint = None
        try:
            if proc is not None:
                await stop_process(proc.pid, grace_s=self._stop_grace_s)
                proc.poll()  # reap it: it is our child
                logger.info("stopped %s (pid %d)", self.name, proc.pid)
        finally:
            if run_dir is not None:
                shutil.rmtree(run_dir, ignore_errors=True)

    def record(self) -> ServiceRecord:
        """What the CLI state file keeps so another process can find and stop this one.

        Raises:
            ServiceError: the service is not running.
        """
        if self._proc is None or self._run_dir is None:
            raise ServiceError(self.name, "not started")
        return ServiceRecord(
            name=self.name,
            pid=self._proc.pid,
            pid_start_ticks=pid_start_ticks(self._proc.pid),
            endpoint=self.endpoint,
            env_var=self.env_var,
            log_path=self._run_dir / _LOG_NAME,
            temp_dir=self._run_dir,
        )
