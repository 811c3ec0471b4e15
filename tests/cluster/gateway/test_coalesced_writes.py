"""A connection's writes of one loop turn leave as one send, in order, and none is lost."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from cluster.gateway.coalesced_writes import CoalescedWrites


class RecordingTransport:
    """Records each send (the logic under test is what is sent when; no socket needed)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False
        self.eof = False

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    def write_eof(self) -> None:
        self.eof = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


def coalesced() -> tuple[CoalescedWrites, RecordingTransport]:
    transport = RecordingTransport()
    writes = CoalescedWrites(cast("asyncio.Transport", transport), asyncio.get_running_loop())
    return writes, transport


async def next_turn() -> None:
    await asyncio.sleep(0)  # lets the callbacks the last turn scheduled run


async def test_a_head_and_its_body_written_in_one_turn_leave_as_one_send_at_once() -> None:
    writes, transport = coalesced()
    writes.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert transport.sent == []  # the head waits for what follows it
    writes.write(b"{}")
    assert transport.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    await next_turn()
    assert len(transport.sent) == 1  # nothing left over for the end of the turn


async def test_a_head_alone_leaves_at_the_end_of_its_turn_and_later_writes_keep_their_order() -> (
    None
):
    writes, transport = coalesced()
    writes.write(b"head")
    await next_turn()
    assert transport.sent == [b"head"]  # a stream's first event may come much later
    for event in (b"e1", b"e2", b"e3"):
        writes.write(event)
    await next_turn()
    assert b"".join(transport.sent) == b"heade1e2e3"


async def test_closing_sends_what_is_held_first_and_aborting_drops_it() -> None:
    writes, transport = coalesced()
    writes.writelines([b"408 ", b"answer"])
    writes.close()
    assert transport.sent == [b"408 answer"]
    assert transport.closed
    other, dropped = coalesced()
    other.write(b"never sent")
    other.abort()
    await next_turn()
    assert dropped.sent == []


async def test_end_of_file_follows_what_is_held_and_other_calls_reach_the_transport() -> None:
    writes, transport = coalesced()
    writes.write(b"last")
    writes.write_eof()
    assert transport.sent == [b"last"]
    assert transport.eof
    assert writes.get_extra_info("peername") == ("127.0.0.1", 1)
    assert not writes.is_closing()
