import socket
import struct

import pytest

from tests.transports.test_contract import within
from transports.codec import DecodeLimits
from transports.errors import ConnectionClosed, MessageTooLarge
from transports.framing import Framing
from transports.message import Notification
from transports.tcp import TcpListener, connect_tcp


async def test_a_listener_binds_loopback_by_default() -> None:
    listener = await TcpListener.start()
    try:
        assert listener._server is not None
        assert {s.getsockname()[0] for s in listener._server.sockets} == {"127.0.0.1"}
    finally:
        await listener.close()


async def test_connecting_to_a_closed_port_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionClosed, match="cannot connect"):
        await connect_tcp("127.0.0.1", port)


async def test_a_huge_declared_length_is_refused_before_buffering_and_skipped() -> None:
    limits = DecodeLimits(max_message_bytes=1024)
    listener = await TcpListener.start(framing=Framing.LENGTH_PREFIXED, limits=limits)
    client = await connect_tcp(
        "127.0.0.1", listener.port, framing=Framing.LENGTH_PREFIXED, limits=limits
    )
    server = await listener.accept()
    try:
        declared = 3 * 1024 * 1024
        client._writer.write(struct.pack(">I", declared))
        client._writer.write(b"\0" * declared)
        with pytest.raises(MessageTooLarge) as caught:
            await within(server.receive())
        assert caught.value.size_bytes == declared
        await within(client.send(Notification(method="after")))
        assert (await within(server.receive())).message == Notification(method="after")
    finally:
        await client.close()
        await server.close()
        await listener.close()


async def test_a_listener_hands_out_each_connection_once() -> None:
    listener = await TcpListener.start()
    clients = [await connect_tcp("127.0.0.1", listener.port) for _ in range(3)]
    try:
        servers = [await within(listener.accept()) for _ in clients]
        for i, client in enumerate(clients):
            await within(client.send(Notification(method=f"from-{i}")))
        received = {(await within(s.receive())).message for s in servers}
        assert received == {Notification(method=f"from-{i}") for i in range(3)}
    finally:
        for transport in clients:
            await transport.close()
        await listener.close()
