"""stdio in both roles, against real child processes."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import pytest

from tests.transports.test_contract import within
from transports.codec import DecodeLimits
from transports.errors import ConnectionClosed, MessageTooLarge
from transports.message import Notification, Request, Response
from transports.stdio import StdioClientTransport

ECHO_SERVER = (sys.executable, "-m", "tests.transports.stdio_echo_server")


@pytest.fixture
async def echo() -> AsyncIterator[StdioClientTransport]:
    transport = await StdioClientTransport.launch(ECHO_SERVER)
    async with transport:
        yield transport


async def call(transport: StdioClientTransport, request: Request) -> Response:
    await within(transport.send(request))
    delivery = await within(transport.receive())
    assert isinstance(delivery.message, Response)
    return delivery.message


async def test_a_stdio_server_answers_a_client_that_launched_it(
    echo: StdioClientTransport,
) -> None:
    answer = await call(echo, Request(id=1, method="echo", params={"x": [1, 2]}))
    assert answer == Response.success(1, {"x": [1, 2]})


async def test_the_server_answers_a_malformed_line_with_a_parse_error_and_keeps_going(
    echo: StdioClientTransport,
) -> None:
    echo._writer.write(b"{garbage\n")
    delivery = await within(echo.receive())
    assert isinstance(delivery.message, Response)
    assert delivery.message.error is not None
    assert delivery.message.error.code == -32700
    assert delivery.message.id is None
    assert (await call(echo, Request(id=2, method="echo", params={}))).result == {}


async def test_a_child_that_exits_surfaces_as_connection_closed_with_its_exit_code() -> None:
    transport = await StdioClientTransport.launch(
        [sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"]
    )
    async with transport:
        with pytest.raises(ConnectionClosed) as caught:
            await within(transport.receive())
    assert "exited with code 3" in str(caught.value)
    assert "boom" in str(caught.value)


async def test_a_write_to_a_child_that_exited_carries_its_exit_code_and_stderr() -> None:
    transport = await StdioClientTransport.launch(
        [sys.executable, "-c", "import sys; sys.stderr.write('missing X\\n'); sys.exit(4)"]
    )
    async with transport:
        await within(transport.process.wait())

        async def keep_sending() -> None:
            for _ in range(100):  # the pipe breaks on the first write or one of the next
                await within(transport.send(Notification(method="hello?")))

        with pytest.raises(ConnectionClosed) as caught:
            await keep_sending()
    assert "exited with code 4" in str(caught.value)
    assert "missing X" in str(caught.value)


async def test_sending_to_a_dead_child_raises_connection_closed(
    echo: StdioClientTransport,
) -> None:
    await within(echo.send(Request(id=1, method="exit")))
    await within(echo.process.wait())

    async def keep_sending() -> None:
        for _ in range(100):  # the pipe breaks on the first write or one of the next
            await within(echo.send(Notification(method="hello?")))

    with pytest.raises(ConnectionClosed):
        await keep_sending()
    assert not echo.is_connected()


async def test_a_command_that_cannot_start_is_a_clear_error() -> None:
    with pytest.raises(ConnectionClosed, match="cannot start"):
        await StdioClientTransport.launch(["/nonexistent/raybus-server"])


async def test_close_escalates_to_kill_for_a_child_that_ignores_stdin_and_sigterm() -> None:
    stubborn = (
        "import signal, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
        "while True: signal.pause()\n"
    )
    transport = await StdioClientTransport.launch(
        [sys.executable, "-c", stubborn], shutdown_timeout_s=0.3
    )
    await within(transport._reader.readline())  # SIGTERM is ignored from here on
    await within(transport.close(), timeout_s=5)
    assert transport.process.returncode == -9


async def test_an_overlong_line_from_the_child_is_skipped_and_the_next_one_read() -> None:
    script = (
        "import sys\n"
        "sys.stdout.write('x' * 5000 + '\\n')\n"
        'sys.stdout.write(\'{"jsonrpc":"2.0","method":"after"}\\n\')\n'
        "sys.stdout.flush()\n"
    )
    transport = await StdioClientTransport.launch(
        [sys.executable, "-c", script], limits=DecodeLimits(max_message_bytes=1000)
    )
    async with transport:
        with pytest.raises(MessageTooLarge):
            await within(transport.receive())
        assert (await within(transport.receive())).message == Notification(method="after")


async def test_an_official_sdk_server_answers_tools_call_over_our_stdio_transport() -> None:
    from cluster.cli.demo import run_demo

    initialize, tools, call_result = await within(run_demo(), timeout_s=60)
    assert isinstance(initialize.result, dict)
    assert initialize.result["serverInfo"]["name"] == "calculator"
    assert {tool["name"] for tool in tools.result["tools"]} >= {"add", "multiply"}
    assert call_result.result["structuredContent"] == {"result": 5.0}


async def test_many_interleaved_calls_are_all_answered(echo: StdioClientTransport) -> None:
    count = 500
    for i in range(count):
        await within(echo.send(Request(id=i, method="echo", params={"i": i})))
    answers = [await within(echo.receive()) for _ in range(count)]
    assert [d.message for d in answers] == [Response.success(i, {"i": i}) for i in range(count)]
