"""A worker's end of the direct lane's Unix socket (why: :mod:`cluster.backends.direct_socket`).

On Linux the socket has an abstract name (nothing on disk: it goes with the process, even
one killed outright, as Ray kills actors); such a name is visible to every local user, so
a connection from any other user id than this process's is closed unread (``SO_PEERCRED``).
Elsewhere it is a file in a directory only this user can enter (``mkdtemp``: 0700),
removed when the worker stops.

Each request runs as its own task, exactly as the actor methods ``call`` and ``collect``
would run it, and is answered under its sequence number when it ends. A client that
goes away leaves its calls running; their answers wait for a collect that never comes
and are let go as any uncollected answer is (:class:`actors.worker.direct.DirectCalls`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import socket
import struct
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from actors.worker.direct import DirectOutcome
from cluster.backends.direct_socket import CALL, COLLECT, read_message, write_message

__all__ = ["DirectListener"]

logger = logging.getLogger(__name__)

Serve = Callable[[list[Any]], Awaitable[DirectOutcome]]

_BACKLOG = 1024  # clients connect once each, but many may start at once


class DirectListener:
    """Serves ``call`` and ``collect`` requests on a Unix socket only this user can reach."""

    def __init__(self, call: Serve, collect: Serve) -> None:
        self._serve = {CALL: call, COLLECT: collect}
        self._directory: str | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._requests: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        """Listen; the socket's address (a path, or an abstract name starting with NUL)."""
        if sys.platform.startswith("linux"):
            path = f"\0raybus-direct-{secrets.token_hex(16)}"
        else:
            self._directory = tempfile.mkdtemp(prefix="raybus-direct-")  # mode 0700
            path = os.path.join(self._directory, "worker.sock")
        # Bound by Python's socket module, as clients connect (see _connected_socket in
        # cluster.backends.direct_socket): uvloop's own handling of abstract names differs.
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listening.bind(path)
            listening.listen(_BACKLOG)
            self._server = await asyncio.start_unix_server(self._accept, sock=listening)
        except BaseException:
            listening.close()
            raise
        return path

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.close()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not _same_user(writer):
            logger.warning("refused a direct connection from another user")
            writer.close()
            return
        self._connections.add(writer)
        try:
            while True:
                sequence, op, payload = await read_message(reader)
                serve = self._serve.get(op)
                if serve is None:
                    logger.warning("closing a direct connection: unknown request %r", op)
                    return
                task = asyncio.get_running_loop().create_task(
                    self._answer(writer, sequence, serve(payload))
                )
                self._requests.add(task)  # the loop holds tasks weakly
                task.add_done_callback(self._requests.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client left (or sent more than a message may hold)
        except Exception:
            logger.exception("closing a direct connection")
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _answer(
        self, writer: asyncio.StreamWriter, sequence: int, outcome: Awaitable[DirectOutcome]
    ) -> None:
        try:
            message: tuple[int, DirectOutcome | None, str | None] = (sequence, await outcome, None)
        except Exception as exc:  # noqa: BLE001 - told to the client, as a Ray call would be
            message = (sequence, None, f"{type(exc).__name__}: {exc}")
        if writer.is_closing():
            return  # the client left: nobody to tell
        with contextlib.suppress(ConnectionError):
            write_message(writer, message)
            await writer.drain()


_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _same_user(writer: asyncio.StreamWriter) -> bool:
    """Is the peer this process's user? (True where the OS cannot say: there the socket's
    directory admits no one else.)"""
    peer_credentials = getattr(socket, "SO_PEERCRED", None)
    connection = writer.get_extra_info("socket")
    if peer_credentials is None or connection is None:
        return True
    raw = connection.getsockopt(socket.SOL_SOCKET, peer_credentials, _CREDENTIALS.size)
    _, uid, _ = _CREDENTIALS.unpack(raw)
    return bool(uid == os.getuid())
