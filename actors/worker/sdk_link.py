"""An official-SDK server object hosted in the worker's own process.

:class:`SdkServerLink` serves an ``MCPServer`` or low-level ``Server`` object with no
HTTP and no subprocess: handshake-era sessions run unmodified over the SDK's in-memory
streams, 2026-07-28 requests go straight into the server with the SDK's ``serve_one``
(see :mod:`actors.worker.modern_calls`). :func:`load_server_object` and
:func:`functions_server` build the object a ``server:`` or ``tools:`` pool names.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from types import ModuleType
from typing import Any

import anyio
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.runner import serve_dual_era_loop
from mcp.shared.memory import create_client_server_memory_streams
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp_types import jsonrpc_message_adapter

from actors.worker.modern_calls import ModernCalls, is_modern_request
from actors.worker.server_links import CloseStream, Related
from transports.codec import message_from_json
from transports.errors import ConnectionClosed, InvalidMessage
from transports.message import Notification, TransportMessage

__all__ = ["SdkServerLink", "functions_server", "load_server_object"]

logger = logging.getLogger(__name__)


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
    """An SDK server object in this process, served by the SDK's own code on both eras.

    Handshake-era traffic (``initialize``, the session's calls, answers to the server's
    sampling / elicitation / roots requests) runs over the SDK's in-memory streams into
    its dual-era serving loop, unmodified. 2026-07-28 requests are self-contained and go
    straight into the server through :class:`~actors.worker.modern_calls.ModernCalls`
    (``serve_one``, as the SDK's HTTP entry serves them). Both share one entry of the
    server's lifespan, as ``Server.run`` would enter it once per connection.
    """

    def __init__(self, server: MCPServer | Server[Any]) -> None:
        # The SDK's own in-memory client unwraps MCPServer the same way.
        self._server: Server[Any] = (
            server._lowlevel_server if isinstance(server, MCPServer) else server
        )
        self._task: asyncio.Task[None] | None = None
        self._client_write: Any = None
        self._modern: ModernCalls | None = None
        self._inbox: asyncio.Queue[tuple[TransportMessage, Related] | None] = asyncio.Queue()
        self._legacy_opened = False  # has anything gone into the session streams yet?
        self._ready = asyncio.Event()
        self._closed = False

    async def open(self) -> None:
        self._task = task = asyncio.create_task(self._run())
        async with asyncio.timeout(30):
            await self._ready.wait()
        if task.done() and not task.cancelled() and task.exception() is not None:
            # The lifespan failed to enter: say why now, not at the first message.
            raise ConnectionClosed(f"in-process MCP server failed to start: {task.exception()!r}")

    async def _run(self) -> None:
        server = self._server
        try:
            # What Server.run does, with the lifespan state kept for the direct calls.
            async with (
                server.lifespan(server) as lifespan_state,
                create_client_server_memory_streams() as (client, server_streams),
            ):
                client_read, self._client_write = client
                self._modern = ModernCalls(server, lifespan_state, self._put)
                self._ready.set()
                pump = asyncio.create_task(self._pump(client_read))
                try:
                    await serve_dual_era_loop(
                        server,
                        *server_streams,
                        lifespan_state=lifespan_state,
                        init_options=server.create_initialization_options(),
                    )
                    await pump  # what the server wrote before it stopped
                finally:
                    pump.cancel()
                    # Direct calls use the lifespan state: they end before it does.
                    await self._modern.close()
        finally:
            self._closed = True
            self._ready.set()
            self._inbox.put_nowait(None)

    def _put(self, message: TransportMessage, related: Related) -> None:
        self._inbox.put_nowait((message, related))

    async def _pump(self, client_read: Any) -> None:
        try:
            async for item in client_read:
                if isinstance(item, Exception):
                    logger.warning("in-process server reported %r", item)
                    continue
                try:
                    self._inbox.put_nowait(_from_sdk(item))
                except InvalidMessage as exc:
                    logger.warning("in-process server sent an invalid message: %s", exc)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the session streams closed under us: same as their end

    async def send(
        self, message: TransportMessage, close_stream: CloseStream | None = None
    ) -> None:
        modern = self._modern
        if self._closed or self._client_write is None or modern is None:
            raise ConnectionClosed("in-process MCP server stopped")
        if is_modern_request(message):
            modern.start(message, close_stream)
            return
        if isinstance(message, Notification) and message.method == "notifications/cancelled":
            if modern.cancel(message):
                return
            if not self._legacy_opened:  # no session to cancel in: only direct calls ran
                modern.notify(message)
                return
        self._legacy_opened = True
        try:
            await self._client_write.send(_to_sdk(message, close_stream))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ConnectionClosed("in-process MCP server stopped") from None

    async def receive(self) -> tuple[TransportMessage, Related]:
        if self._task is None:
            raise ConnectionClosed("in-process MCP server not started")
        item = await self._inbox.get()
        if item is None:
            self._inbox.put_nowait(None)  # every later receive ends the same way
            raise ConnectionClosed("in-process MCP server stopped")
        return item

    async def close(self) -> None:
        if self._modern is not None:
            await self._modern.close()
        if self._client_write is not None:
            await self._client_write.aclose()
        if self._task is not None:
            try:
                async with asyncio.timeout(5):
                    await asyncio.shield(self._task)
            except TimeoutError:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
