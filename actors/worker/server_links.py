"""Connections from a worker to the one MCP server it hosts.

* :class:`SdkServerLink` - an official-SDK ``MCPServer`` or low-level ``Server`` object,
  run unmodified by the SDK's own session machinery over in-memory streams (no HTTP, no
  subprocess).
* :class:`StdioServerLink` - a server command launched as a subprocess on MCP stdio.

Both carry our JSON-RPC messages and, for what the server sends, the id of the request
it relates to when the server says so (the SDK does, in message metadata).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import ModuleType
from typing import Any, Protocol

import anyio
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.shared.memory import create_client_server_memory_streams
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp_types import jsonrpc_message_adapter

from transports.codec import message_from_json
from transports.errors import ConnectionClosed, InvalidMessage
from transports.message import JSONRPCId, TransportMessage
from transports.stdio import StdioClientTransport

__all__ = [
    "SdkServerLink",
    "ServerLink",
    "StdioServerLink",
    "functions_server",
    "load_server_object",
]

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


def load_server_object(import_path: str) -> MCPServer | Server[Any]:
    """Import ``"package.module:attribute"`` and check it is an SDK server.

    Raises:
        ValueError: the path is malformed, or names something that is not a server.
        ImportError: the module cannot be imported.
    """
    module_name, sep, attribute = import_path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"server {import_path!r} must look like 'package.module:attribute'")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if inspect.isfunction(target) and not any(
        p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        for p in inspect.signature(target).parameters.values()
    ):
        target = target()  # a factory taking no arguments
    if not isinstance(target, MCPServer | Server):
        raise ValueError(f"{import_path!r} is a {type(target).__name__}, not an MCP server")
    return target


def functions_server(module_path: str, name: str | None = None) -> MCPServer:
    """An SDK server whose tools are the public functions of a module.

    Input schemas come from the type hints (the SDK derives them); ``__all__`` limits
    which functions are exported when the module defines it.
    """
    module: ModuleType = importlib.import_module(module_path)
    exported = getattr(module, "__all__", None)
    server = MCPServer(name or module_path)
    count = 0
    for attr_name, value in vars(module).items():
        if attr_name.startswith("_") or not inspect.isfunction(value):
            continue
        if value.__module__ != module.__name__ or (
            exported is not None and attr_name not in exported
        ):
            continue
        server.add_tool(value)
        count += 1
    if count == 0:
        raise ValueError(f"module {module_path!r} defines no public functions to serve as tools")
    return server


def _to_sdk(message: TransportMessage, close_stream: CloseStream | None = None) -> SessionMessage:
    metadata = ServerMessageMetadata(close_sse_stream=close_stream) if close_stream else None
    return SessionMessage(jsonrpc_message_adapter.validate_python(message.to_json_dict()), metadata)


def _from_sdk(item: SessionMessage) -> tuple[TransportMessage, Related]:
    wire = item.message.model_dump(mode="json", by_alias=True, exclude_unset=True)
    wire.setdefault("jsonrpc", "2.0")
    related: Related = None
    if isinstance(item.metadata, ServerMessageMetadata):
        related = item.metadata.related_request_id
    return message_from_json(wire), related


class SdkServerLink:
    """An SDK server object in this process, over the SDK's in-memory streams."""

    def __init__(self, server: MCPServer | Server[Any]) -> None:
        # The SDK's own in-memory client unwraps MCPServer the same way.
        self._server: Server[Any] = (
            server._lowlevel_server if isinstance(server, MCPServer) else server
        )
        self._task: asyncio.Task[None] | None = None
        self._client_read: Any = None
        self._client_write: Any = None
        self._ready = asyncio.Event()
        self._closed = False

    async def open(self) -> None:
        self._task = asyncio.create_task(self._run())
        async with asyncio.timeout(30):
            await self._ready.wait()

    async def _run(self) -> None:
        try:
            async with create_client_server_memory_streams() as (client, server_streams):
                self._client_read, self._client_write = client
                server_read, server_write = server_streams
                self._ready.set()
                await self._server.run(
                    server_read, server_write, self._server.create_initialization_options()
                )
        finally:
            self._closed = True
            self._ready.set()

    async def send(
        self, message: TransportMessage, close_stream: CloseStream | None = None
    ) -> None:
        if self._closed or self._client_write is None:
            raise ConnectionClosed("in-process MCP server stopped")
        try:
            await self._client_write.send(_to_sdk(message, close_stream))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ConnectionClosed("in-process MCP server stopped") from None

    async def receive(self) -> tuple[TransportMessage, Related]:
        while True:
            if self._client_read is None:
                raise ConnectionClosed("in-process MCP server not started")
            try:
                item = await self._client_read.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                raise ConnectionClosed("in-process MCP server stopped") from None
            if isinstance(item, Exception):
                logger.warning("in-process server reported %r", item)
                continue
            try:
                return _from_sdk(item)
            except InvalidMessage as exc:
                logger.warning("in-process server sent an invalid message: %s", exc)

    async def close(self) -> None:
        if self._client_write is not None:
            await self._client_write.aclose()
        if self._task is not None:
            try:
                async with asyncio.timeout(5):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)


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
