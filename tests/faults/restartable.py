"""Private brokers a fault test may stop and start again: the project's own services
(:mod:`cluster.services`), relaunched with the same command, port and data directory.

The session's ``kafka_bootstrap`` / ``sqs_endpoint`` are shared by every test, so a test
that stops its broker runs one of these instead. The fault lives here, in the tests.
"""

from __future__ import annotations

from pathlib import Path

from cluster.services.base import Launch, LocalService
from cluster.services.kafka import KafkaService
from cluster.services.process import spawn, stop_process
from cluster.services.sqs import SqsService

__all__ = ["RestartableKafka", "RestartableSqs", "halt", "resume"]


async def halt(service: LocalService) -> None:
    """Stop the service's process (SIGTERM, then SIGKILL); keep its port and data."""
    proc = service._proc
    assert proc is not None, "not running"
    await stop_process(proc.pid, grace_s=service._stop_grace_s)
    proc.poll()  # reap it: it is our child
    service._proc = None


async def resume(service: LocalService, launch: Launch) -> None:
    """Start the same command again, on the same port and data; wait until it answers."""
    run_dir = service._run_dir
    assert run_dir is not None, "not started"
    assert service._proc is None, "not halted"
    log_path = service.log_path
    assert log_path is not None
    service._proc = spawn(launch.argv, log_path=log_path, cwd=run_dir, env=launch.env)
    await service._wait_ready()


class RestartableKafka(KafkaService):
    """A private Kafka broker (KRaft): its topics and offsets survive a restart."""

    launched: Launch | None = None

    async def _launch(self, run_dir: Path, log_path: Path) -> Launch:
        self.launched = await super()._launch(run_dir, log_path)
        return self.launched


class RestartableSqs(SqsService):
    """A private moto server: in memory, so its queues do NOT survive a restart."""

    launched: Launch | None = None

    async def _launch(self, run_dir: Path, log_path: Path) -> Launch:
        self.launched = await super()._launch(run_dir, log_path)
        return self.launched
