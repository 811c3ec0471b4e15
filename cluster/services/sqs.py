"""A local SQS endpoint: moto's server mode on 127.0.0.1, used exactly as AWS.

Clients reach it through aioboto3 with an ``endpoint_url``, region ``us-east-1`` and
dummy credentials (:func:`sqs_client_kwargs`); nothing in raybus knows it is not AWS.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aioboto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from cluster.services.base import Launch, LocalService
from cluster.services.errors import ServiceError
from cluster.services.process import LOOPBACK, free_port, port_accepts
from cluster.services.state import ServiceName

__all__ = ["SQS_ENDPOINT_ENV", "SQS_REGION", "SqsService", "sqs_client_kwargs", "sqs_list_queues"]

logger = logging.getLogger(__name__)

SQS_ENDPOINT_ENV = "RAYBUS_SQS_ENDPOINT"
SQS_REGION = "us-east-1"
_SERVICE = "sqs"
# moto accepts any credentials; real ones must never be sent to a local endpoint.
_DUMMY_KEY_ID = "testing"
_DUMMY_SECRET = "testing"


def sqs_client_kwargs(endpoint: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """Arguments for ``aioboto3.Session().client("sqs", **kwargs)`` against ``endpoint``.

    Args:
        endpoint: the SQS endpoint URL.
        timeout_s: connect and read timeout of each request.
    """
    return {
        "endpoint_url": endpoint,
        "region_name": SQS_REGION,
        "aws_access_key_id": _DUMMY_KEY_ID,
        "aws_secret_access_key": _DUMMY_SECRET,
        "config": Config(
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            retries={"max_attempts": 2, "mode": "standard"},
        ),
    }


async def sqs_list_queues(endpoint: str, *, timeout_s: float = 10.0) -> list[str]:
    """The queue URLs at ``endpoint`` (a real ``ListQueues`` call).

    Raises:
        ServiceError: the call failed or did not finish within ``timeout_s``.
    """
    session = aioboto3.Session()
    try:
        async with (
            asyncio.timeout(timeout_s),
            session.client("sqs", **sqs_client_kwargs(endpoint, timeout_s=timeout_s)) as sqs,
        ):
            response = await sqs.list_queues()
    except (BotoCoreError, ClientError, OSError, TimeoutError) as exc:
        raise ServiceError(_SERVICE, f"ListQueues at {endpoint} failed: {exc!r}") from exc
    urls: list[str] = response.get("QueueUrls", [])
    return urls


MOTO_HINT = "pip install 'raybus[services]'"


class SqsService(LocalService):
    """moto's SQS-compatible server on a free 127.0.0.1 port.

    Args:
        ready_timeout_s: how long :meth:`start` waits for ``ListQueues`` to succeed.
        python: the interpreter that runs ``moto.server``; by default this one, whose
            environment has ``moto[server]`` (the ``services`` extra, also in ``test``).
    """

    name = ServiceName.SQS
    env_var = SQS_ENDPOINT_ENV

    def __init__(self, *, ready_timeout_s: float = 60.0, python: str | None = None) -> None:
        super().__init__(ready_timeout_s=ready_timeout_s, stop_grace_s=10.0)
        self._python = python or sys.executable

    @classmethod
    async def probe(cls, endpoint: str, *, timeout_s: float) -> bool:
        """Whether an SQS endpoint answers ``ListQueues`` within ``timeout_s``."""
        url = urlsplit(endpoint)
        if url.hostname is None or url.port is None:
            return False
        if not await port_accepts(url.hostname, url.port, timeout_s=min(timeout_s, 1.0)):
            return False
        try:
            await sqs_list_queues(endpoint, timeout_s=timeout_s)
        except ServiceError as exc:
            logger.debug("sqs at %s does not answer yet: %s", endpoint, exc)
            return False
        return True

    async def _launch(self, run_dir: Path, log_path: Path) -> Launch:
        if self._python == sys.executable and importlib.util.find_spec("moto") is None:
            # Said here, in one line, instead of a traceback in a log the user never sees.
            raise ServiceError(_SERVICE, f"moto is not installed: {MOTO_HINT}")
        port = free_port()
        # moto builds queue URLs from MOTO_PORT when set; an inherited value would be wrong.
        env = {**os.environ, "MOTO_PORT": str(port), "PYTHONUNBUFFERED": "1"}
        return Launch(
            argv=(self._python, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)),
            endpoint=f"http://{LOOPBACK}:{port}",
            env=env,
        )
