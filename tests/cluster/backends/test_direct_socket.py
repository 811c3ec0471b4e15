"""The direct lane's Unix socket, both ends, without Ray: a listener serving scripted
``call``/``collect`` coroutines and a client connected to it (cluster.backends.direct_socket,
cluster.ray_actors.direct_listener)."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import struct
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from actors.worker.direct import DirectOutcome
from cluster.backends.direct_socket import CALL, COLLECT, DirectCallFailed, DirectSockets
from cluster.ray_actors.direct_listener import DirectListener
from tests.waiting import wait_until
from transports.envelope import Envelope
from transports.frame import Frame
from transports.message import Request

pytestmark = pytest.mark.asyncio

NODE = "node-a"


def _frame(request_id: str) -> Frame:
    envelope = Envelope(client_id="c", request_id=request_id, method="tools/call", name="t")
    return Frame.of(envelope, Request(id=request_id, method="tools/call", params={"name": "t"}))


class _Worker:
    """What a worker serves on its socket: ``call`` holds a frame named "slow" until
    released, and answers each frame with itself."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.collected: list[list[Any]] = []
        self.listener = DirectListener(self.call, self.collect)
        self.path = ""

    async def call(self, frames: list[Any]) -> DirectOutcome:
        if any(f.envelope.request_id == "slow" for f in frames):
            await self.release.wait()
        if any(f.envelope.request_id == "boom" for f in frames):
            raise RuntimeError("the worker could not serve it")
        return DirectOutcome(list(frames))

    async def collect(self, keys: list[Any]) -> DirectOutcome:
        self.collected.append(keys)
        return DirectOutcome([], running=list(keys))


class _Handle:
    """An actor handle's ``direct_address.remote()``, answered from the test."""

    def __init__(self, address: tuple[str, str] | None) -> None:
        self.direct_address = self
        self._address = address

    async def _answer(self) -> tuple[str, str] | None:
        return self._address

    def remote(self) -> Any:
        return self._answer()


@pytest_asyncio.fixture
async def worker() -> AsyncIterator[_Worker]:
    served = _Worker()
    served.path = await served.listener.start()
    yield served
    served.release.set()
    await served.listener.close()


async def _connected(sockets: DirectSockets, worker: _Worker) -> Any:
    handle = _Handle((NODE, worker.path))
    assert sockets.channel("w", handle) is None  # the first use starts connecting
    await wait_until(lambda: sockets.connected("w"), timeout_s=10)
    return sockets.channel("w", handle)


async def test_answers_come_back_under_their_own_request_in_the_order_calls_end(
    worker: _Worker,
) -> None:
    sockets = DirectSockets(node_id=NODE)
    channel = await _connected(sockets, worker)
    slow = channel.request(CALL, [_frame("slow")])
    quick = channel.request(CALL, [_frame("quick")])
    outcome = await asyncio.wait_for(quick, timeout=10)
    assert [f.envelope.request_id for f in outcome.answers] == ["quick"]
    assert not slow.done()  # one connection, not one call at a time
    worker.release.set()
    outcome = await asyncio.wait_for(slow, timeout=10)
    assert [f.envelope.request_id for f in outcome.answers] == ["slow"]
    keys = [("p", "c", "1")]
    collected = await asyncio.wait_for(channel.request(COLLECT, keys), timeout=10)
    assert collected.running == keys
    assert worker.collected == [keys]
    assert channel.requests_sent == 3
    await sockets.close()


async def test_a_call_the_worker_fails_fails_alone(worker: _Worker) -> None:
    sockets = DirectSockets(node_id=NODE)
    channel = await _connected(sockets, worker)
    with pytest.raises(DirectCallFailed, match="could not serve it"):
        await asyncio.wait_for(channel.request(CALL, [_frame("boom")]), timeout=10)
    outcome = await asyncio.wait_for(channel.request(CALL, [_frame("after")]), timeout=10)
    assert [f.envelope.request_id for f in outcome.answers] == ["after"]
    await sockets.close()


async def test_a_worker_gone_with_a_call_on_its_socket_fails_that_call(worker: _Worker) -> None:
    sockets = DirectSockets(node_id=NODE)
    channel = await _connected(sockets, worker)
    pending = channel.request(CALL, [_frame("slow")])
    await worker.listener.close()  # as the process ending closes it
    with pytest.raises(DirectCallFailed):
        await asyncio.wait_for(pending, timeout=10)
    assert not sockets.connected("w")
    await sockets.close()


async def test_a_worker_on_another_node_keeps_ray_calls(worker: _Worker) -> None:
    sockets = DirectSockets(node_id="node-b")
    handle = _Handle((NODE, worker.path))
    assert sockets.channel("w", handle) is None
    await asyncio.wait_for(asyncio.gather(*list(sockets._connecting)), timeout=10)
    assert sockets.channel("w", handle) is None
    assert not sockets.connected("w")
    no_socket = _Handle(None)
    assert sockets.channel("v", no_socket) is None
    await sockets.close()


async def test_the_socket_is_reachable_by_this_user_only(worker: _Worker) -> None:
    if not sys.platform.startswith("linux"):
        mode = stat.S_IMODE(os.stat(os.path.dirname(worker.path)).st_mode)
        assert mode == 0o700
        return
    assert worker.path.startswith("\0")  # abstract: nothing on disk to leave behind
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    if os.getuid() != 0 or system_python is None:
        pytest.skip("connecting as another user needs root and a python it may run")
    # Another user may reach an abstract name: the worker closes it before reading.
    probe = "\n".join(
        [
            "import socket, struct",
            "s = socket.socket(socket.AF_UNIX)",
            f"s.connect({worker.path!r})",
            "try:",  # the worker may close before the send, or with it unread
            "    s.sendall(struct.pack('!I', 4) + b'junk')",
            "    print('closed' if s.recv(10) == b'' else 'answered')",
            "except (BrokenPipeError, ConnectionResetError):",
            "    print('closed')",
        ]
    )
    other = await asyncio.create_subprocess_exec(
        system_python,
        "-c",
        probe,
        user=65534,
        cwd="/",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(other.communicate(), timeout=30)
    assert not err, err
    assert out.strip() == b"closed"  # nothing answered
    sockets = DirectSockets(node_id=NODE)  # this user still is served
    channel = await _connected(sockets, worker)
    outcome = await asyncio.wait_for(channel.request(CALL, [_frame("mine")]), timeout=10)
    assert [f.envelope.request_id for f in outcome.answers] == ["mine"]
    await sockets.close()


async def test_an_oversized_message_closes_the_connection_unread(worker: _Worker) -> None:
    reader, writer = await asyncio.open_unix_connection(worker.path)
    writer.write(struct.pack("!I", 2**31))  # announces 2 GiB: refused before reading it
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), timeout=10) == b""  # closed by the worker
    writer.close()
    # Others still connect and are served.
    sockets = DirectSockets(node_id=NODE)
    channel = await _connected(sockets, worker)
    outcome = await asyncio.wait_for(channel.request(CALL, [_frame("next")]), timeout=10)
    assert [f.envelope.request_id for f in outcome.answers] == ["next"]
    await sockets.close()
