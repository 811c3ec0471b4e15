"""The direct lane's socket on uvloop, the event loop Ray gives every async actor.

uvloop's ``open_unix_connection(path)`` refuses an abstract name (EINVAL): a gateway
replica, itself an actor, once sent every direct call as a Ray call without a word.
"""

from __future__ import annotations

import asyncio

import uvloop

from cluster.backends.direct_socket import CALL, DirectSockets
from tests.cluster.backends.test_direct_socket import NODE, _frame, _Handle, _Worker
from tests.waiting import wait_until


def test_a_client_on_uvloop_connects_and_is_served() -> None:
    async def scenario() -> list[str]:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        worker = _Worker()
        worker.path = await worker.listener.start()
        sockets = DirectSockets(node_id=NODE)
        handle = _Handle((NODE, worker.path))
        try:
            assert sockets.channel("w", handle) is None  # the first use starts connecting
            await wait_until(lambda: sockets.connected("w"), timeout_s=10)
            channel = sockets.channel("w", handle)
            assert channel is not None
            outcome = await asyncio.wait_for(channel.request(CALL, [_frame("on-uvloop")]), 10)
            return [f.envelope.request_id for f in outcome.answers]
        finally:
            await sockets.close()
            await worker.listener.close()

    assert uvloop.run(scenario()) == ["on-uvloop"]
