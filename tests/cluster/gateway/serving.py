"""The gateway's HTTP app served by uvicorn on a free port, over any bus (no Ray needed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cluster.config import parse_config
from cluster.gateway.app import bind_listener, http_server
from cluster.gateway.server import Gateway

__all__ = ["serving"]


@asynccontextmanager
async def serving(
    gateway: Gateway, policy: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[str]:
    """Serve ``gateway``; ``settings`` are more of the config's ``gateway`` section (its
    ``port``, when given, is bound; else a free one)."""
    config = parse_config(
        {
            "name": "direct",
            "pools": [{"name": "p", "tools": "x:y"}],
            "gateway": {"policy": policy or {}, **settings},
        }
    )
    sock = bind_listener("127.0.0.1", int(settings.get("port", 0)))
    port = sock.getsockname()[1]
    server = http_server(gateway, config, port)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    # The socket listens already: requests wait in its backlog until uvicorn serves.
    try:
        yield config.gateway.url(port)
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await task
        sock.close()
