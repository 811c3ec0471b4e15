"""Probing a cluster address before Ray is asked (Ray alone retries for minutes)."""

from __future__ import annotations

import importlib.util
import os
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cluster.cli.join import ClusterUnreachable, join_cluster, probe_address


@contextmanager
def listener(behave: Callable[[socket.socket], None]) -> Iterator[str]:
    """A loopback server whose connections ``behave`` handles; yields its host:port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)  # how often the accept loop looks at `stop`
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed: the test is over
            with connection:
                behave(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=10)
        server.close()


def free_address() -> str:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return f"127.0.0.1:{probe.getsockname()[1]}"  # closed again: nothing listens


def refusal(address: str, timeout_s: float = 5.0) -> str:
    with pytest.raises(ClusterUnreachable) as caught:
        probe_address(address, timeout_s=timeout_s)
    return str(caught.value)


def test_an_address_where_nothing_listens_is_refused_naming_it() -> None:
    address = free_address()
    assert refusal(address) == (
        f"cannot join the Ray cluster at {address!r}: nothing listens there (connection refused)"
    )
    assert "nothing listens there" in refusal(f"ray://{address}")


def test_a_grpc_server_answering_the_http2_preface_passes() -> None:
    def grpc_like(connection: socket.socket) -> None:
        connection.recv(1024)
        connection.sendall(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))  # an empty SETTINGS frame

    with listener(grpc_like) as address:
        probe_address(address)
        probe_address(f"ray://{address}")


def test_something_else_on_the_port_is_told_apart_from_ray() -> None:
    def web_server(connection: socket.socket) -> None:
        connection.recv(1024)
        connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    with listener(web_server) as address:
        assert "something listens there, but not Ray" in refusal(address)


def test_a_listener_that_never_answers_is_given_up_on_after_the_timeout() -> None:
    answered = threading.Event()

    def silent(connection: socket.socket) -> None:
        answered.wait(30)  # holds the connection open, says nothing

    with listener(silent) as address:
        try:
            assert "said nothing within 0.5 s" in refusal(address, timeout_s=0.5)
        finally:
            answered.set()


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("http://10.0.0.1:8265", "(that is the dashboard's, for `ray job submit`)"),
        ("10.0.0.1", "give host:port, e.g. 127.0.0.1:6379"),
        ("10.0.0.1:99999", "not host:port"),
        ("host.invalid:6379", "cannot resolve 'host.invalid'"),
    ],
)
def test_addresses_ray_init_would_not_take_are_refused_with_the_reason(
    address: str, reason: str
) -> None:
    assert reason in refusal(address)


def test_auto_and_local_are_left_to_ray() -> None:
    probe_address("auto")
    probe_address("local")


def test_the_error_pickles_for_ray() -> None:
    error = ClusterUnreachable("10.0.0.1:6379", "nothing listens there")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


@pytest.mark.parametrize("verb", ["up", "start"])
def test_raybus_up_and_start_refuse_an_address_where_nothing_listens_in_one_line(
    verb: str, tmp_path: Path
) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text("pools:\n  - name: kit\n    tools: cluster.examples.functions\n")
    address = free_address()
    # Ray alone would retry this address for minutes: the bound says the probe answered.
    done = subprocess.run(
        [sys.executable, "-m", "cluster.cli", verb, str(config), "--address", address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"raybus: cannot join the Ray cluster at {address!r}: "
        "nothing listens there (connection refused)"
    ]


def test_a_ray_client_address_needs_the_client_extra_and_says_so() -> None:
    if importlib.util.find_spec("grpc") is not None:
        pytest.skip("ray[client] is installed here")

    def grpc_like(connection: socket.socket) -> None:
        connection.recv(1024)
        connection.sendall(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))

    with listener(grpc_like) as address, pytest.raises(ClusterUnreachable) as caught:
        join_cluster(f"ray://{address}")
    assert "requires pip package `ray[client]`" in str(caught.value)
