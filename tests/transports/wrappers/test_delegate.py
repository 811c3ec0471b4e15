"""The wrappers' shared shell: starting, closing and the extension frames."""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

import pytest

from tests.transports.wrappers.fakes import ScriptedTransport
from transports.base import Transport
from transports.errors import InvalidRequest
from transports.message import Notification, Request
from transports.wrappers.batching import BatchingTransport
from transports.wrappers.compression import CompressionTransport
from transports.wrappers.delegate import TransportWrapper, extension_message, extension_params
from transports.wrappers.logging import LoggingTransport
from transports.wrappers.retry import RetryTransport


class StartableTransport(ScriptedTransport):
    started: int = 0

    async def start(self) -> Self:
        self.started += 1
        return self


async def test_async_with_starts_the_innermost_transport_and_closes_it() -> None:
    inner = StartableTransport()
    async with LoggingTransport(RetryTransport(inner)) as outer:
        assert inner.started == 1
        assert outer.is_connected()
    assert inner.closed


async def test_a_transport_without_start_is_used_as_it_is() -> None:
    inner = ScriptedTransport()
    async with TransportWrapper(inner) as wrapper:
        assert wrapper.inner is inner
        assert wrapper.capabilities == inner.capabilities
    assert inner.closed


@pytest.mark.parametrize(
    "wrapper",
    [BatchingTransport, CompressionTransport, LoggingTransport, RetryTransport, TransportWrapper],
)
def test_every_wrapper_is_a_transport_with_the_inner_capabilities(
    wrapper: Callable[[Transport], Transport],
) -> None:
    inner = ScriptedTransport()
    wrapped = wrapper(inner)
    assert isinstance(wrapped, Transport)
    assert wrapped.capabilities == inner.capabilities
    assert wrapped.transport_type == inner.transport_type


def test_extension_frames_are_recognised_by_kind_and_version() -> None:
    frame = extension_message("zstd", 1, z="")
    assert frame.method == "rpc.raybus.zstd"
    assert extension_params(frame, "zstd", 1) == {"v": 1, "z": ""}
    assert extension_params(frame, "batch", 1) is None
    assert extension_params(Request(id=1, method="rpc.raybus.zstd"), "zstd", 1) is None
    with pytest.raises(InvalidRequest, match="version 1 is not supported"):
        extension_params(frame, "zstd", 2)
    with pytest.raises(InvalidRequest, match="params must be an object"):
        extension_params(Notification(method="rpc.raybus.zstd", params=[1]), "zstd", 1)
