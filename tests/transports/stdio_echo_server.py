"""A raybus stdio *server* used by the tests: it speaks on its own stdin/stdout.

Requests are answered with their params as the result; bad input is answered with the
JSON-RPC error the codec produced; ``exit`` ends the process with code 0.
"""

from __future__ import annotations

import asyncio

from transports.codec import error_response_for
from transports.errors import ConnectionClosed, InvalidMessage, MessageTooLarge
from transports.message import Request, Response
from transports.stdio import open_stdio_server


async def serve() -> None:
    transport = await open_stdio_server()
    while True:
        try:
            delivery = await transport.receive()
        except InvalidMessage as bad:
            await transport.send(error_response_for(bad))
            continue
        except MessageTooLarge as big:
            await transport.send(Response.failure(None, -32600, str(big)))
            continue
        except ConnectionClosed:
            return
        message = delivery.message
        if isinstance(message, Request):
            if message.method == "exit":
                await transport.close()
                return
            await transport.send(Response.success(message.id, message.params))


if __name__ == "__main__":
    asyncio.run(serve())
