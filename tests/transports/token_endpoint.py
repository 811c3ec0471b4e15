"""A real OAuth token endpoint on 127.0.0.1 for tests (the client credentials grant)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

__all__ = ["TokenEndpoint", "serving"]


class TokenEndpoint:
    """A real OAuth token endpoint on 127.0.0.1 (client credentials grant)."""

    def __init__(
        self, lifetime_s: int, status: int = 200, mint: Callable[[int], str] = "token-{}".format
    ) -> None:
        self.lifetime_s = lifetime_s
        self.status = status
        self.mint = mint  # the n-th token
        self.requests: list[tuple[str, str]] = []  # (authorization, form)
        self.url = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
        lowered = {k.lower(): v for k, v in headers.items()}
        form = (await reader.readexactly(int(lowered["content-length"]))).decode()
        self.requests.append((lowered.get("authorization", ""), form))
        body = json.dumps(
            {"access_token": self.mint(len(self.requests)), "expires_in": self.lifetime_s}
        ).encode()
        writer.write(
            f"HTTP/1.1 {self.status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()


@asynccontextmanager
async def serving(endpoint: TokenEndpoint) -> AsyncIterator[TokenEndpoint]:
    server = await asyncio.start_server(endpoint.handle, "127.0.0.1", 0)
    endpoint.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/token"
    async with server:
        yield endpoint
