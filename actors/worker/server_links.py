"""Connections from a worker to the one MCP server it hosts: what every link shares.

* :class:`ServerLink` - what the hosted-server code needs of any link.
* :class:`StdioServerLink` - a server command launched as a subprocess on MCP stdio.
* :class:`~actors.worker.sdk_link.SdkServerLink` - an official-SDK server object in this
  process (its own module: it brings the MCP SDK).
* :class:`~actors.worker.remote_link.RemoteServerLink` - a server elsewhere, reached over
  Streamable HTTP (its own module: it brings the SDK's HTTP client).

Each carries our JSON-RPC messages and, for what the server sends, the id of the request
it relates to when the server says so (the SDK does, in message metadata).

This module imports no MCP SDK: a worker hosting a command speaks to it on our own codec,
and the SDK's import (a third of a second of CPU) would only delay the child's start on a
machine where every worker of a starting bus competes for the same cores.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol

from transports.errors import ConnectionClosed, InvalidMessage
from transports.message import JSONRPCId, TransportMessage
from transports.stdio import StdioClientTransport

__all__ = ["CloseStream", "Related", "ServerLink", "StdioServerLink"]

logger = logging.getLogger(__name__)

Related = JSONRPCId | None


CloseStream = Callable[[], Awaitable[None]]


class ServerLink(Protocol):
    async def open(self) -> None: ...

    async def send(
        self, message: TransportMessage, close_stream: CloseStream | None = None
    ) -> None:
        """Send to the server; ``close_stream`` is what the server may call to close the
        client's SSE stream for this request (SEP-1699), where the link can pass it."""
        ...

    async def receive(self) -> tuple[TransportMessage, Related]:
        """The next message from the server and the request it relates to, if known.

        Raises:
            ConnectionClosed: the server is gone.
        """
        ...

    async def close(self) -> None: ...


class StdioServerLink:
    """A server command on MCP stdio. Restarting is the hosting session's job."""

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.command = list(command)
        self._env = env
        self._cwd = cwd
        self._transport: StdioClientTransport | None = None

    async def open(self) -> None:
        self._transport = await StdioClientTransport.launch(
            self.command, env=self._env, cwd=self._cwd
        )

    def _require(self) -> StdioClientTransport:
        if self._transport is None:
            raise ConnectionClosed("stdio server not started")
        return self._transport

    async def send(
        self, message: TransportMessage, close_stream: CloseStream | None = None
    ) -> None:
        await self._require().send(message)  # stdio has no way to pass close_stream

    async def receive(self) -> tuple[TransportMessage, Related]:
        transport = self._require()
        while True:
            try:
                delivery = await transport.receive()
            except InvalidMessage as exc:
                logger.warning("stdio server %s sent an invalid message: %s", self.command[0], exc)
                continue
            return delivery.message, None

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
