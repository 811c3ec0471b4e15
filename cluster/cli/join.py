"""Joining a running Ray cluster by address, or saying in seconds why not.

``ray.init(address="host:port")`` with nothing listening there does not fail: it retries
the GCS for minutes (over 2 minutes with Ray 2.60, printing warnings). So before Ray is
asked, the address is probed: a TCP connection (refused, unreachable or unresolvable
ends it at once, silence after ``timeout_s``), then the HTTP/2 connection preface that
every gRPC server - Ray's GCS, and the Ray Client server behind ``ray://`` - answers
with its SETTINGS frame. A port held by something else (a web server, a database) is
thereby told apart from Ray without waiting on Ray's retries.

Addresses are what ``ray.init`` takes: ``host:port`` (the GCS, ``ray start --head``
prints it), ``ray://host:port`` (Ray Client, port 10001 by default), ``auto`` (the
cluster ``ray start`` set up on this machine; Ray itself fails fast there) or ``local``.
With ``RAY_USE_TLS`` set the GCS speaks TLS first, so only the TCP probe applies.

Token authentication: ``ray start`` turns it on by default (Ray 2.5x), and Ray sends a
token only to a cluster it found itself (``auto``), never to an address it was given -
that would hand the token to whoever listens there. Joining by address therefore needs
``RAY_AUTH_MODE=token`` (the token from ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``). Ray itself would refuse only after its retries (~20 s), so a GCS
address is first asked for its cluster id by Ray's own GCS client, which a cluster
wanting a token refuses at once: the error (in milliseconds) says what to set.
"""

from __future__ import annotations

import logging
import os
import socket
from urllib.parse import urlsplit

import ray

from cluster.naming import NAMESPACE
from transports.errors import BusError

__all__ = ["ClusterUnreachable", "join_cluster", "probe_address"]

_PROBE_TIMEOUT_S = 5.0
_RAY_CLIENT_PORT = 10001
# RFC 9113 section 3.4: the client preface, then an empty SETTINGS frame of our own.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS_FRAME = 4
_TOKEN_SOURCES = "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"  # where Ray looks


class ClusterUnreachable(BusError):
    """No Ray cluster answers at ``address``; ``reason`` says what was found instead."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(address, reason)
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot join the Ray cluster at {self.address!r}: {self.reason}"


def probe_address(address: str, timeout_s: float = _PROBE_TIMEOUT_S) -> None:
    """Check that a Ray cluster could answer at ``address``, within about ``timeout_s``.

    ``auto`` and ``local`` are left to Ray, which resolves them from this machine.

    Raises:
        ClusterUnreachable: nothing listens there, or what listens is not gRPC, or the
            address is not one ``ray.init`` takes.
    """
    if address in ("auto", "local"):
        return
    scheme, _, rest = address.rpartition("://")
    if scheme not in ("", "ray"):
        hint = (
            " (that is the dashboard's, for `ray job submit`)" if scheme.startswith("http") else ""
        )
        raise ClusterUnreachable(
            address,
            f"a {scheme}:// address is not a cluster address{hint}; give the GCS address "
            "host:port that `ray start --head` prints, or ray://host:10001",
        )
    try:
        parts = urlsplit(f"//{rest}")
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ClusterUnreachable(address, f"not host:port ({exc})") from None
    if port is None:
        if scheme != "ray":
            raise ClusterUnreachable(address, "give host:port, e.g. 127.0.0.1:6379")
        port = _RAY_CLIENT_PORT
    if not host:
        raise ClusterUnreachable(address, "no host in the address")
    _probe(address, host, port, timeout_s)


def _probe(address: str, host: str, port: int, timeout_s: float) -> None:
    try:
        connection = socket.create_connection((host, port), timeout=timeout_s)
    except socket.gaierror as exc:
        raise ClusterUnreachable(address, f"cannot resolve {host!r} ({exc.strerror})") from None
    except TimeoutError:
        raise ClusterUnreachable(address, f"no answer within {timeout_s:g} s") from None
    except OSError as exc:
        reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else str(exc)
        raise ClusterUnreachable(address, f"nothing listens there ({reason})") from None
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        connection.close()
        return
    with connection:
        try:
            connection.sendall(_HTTP2_PREFACE)
            header = _read(connection, 9)
        except TimeoutError:
            raise ClusterUnreachable(
                address, f"something listens there but said nothing within {timeout_s:g} s"
            ) from None
        except OSError:  # reset or closed on us: not a gRPC server
            header = b""
    if len(header) < 9 or header[3] != _SETTINGS_FRAME:
        raise ClusterUnreachable(
            address,
            "something listens there, but not Ray (no gRPC answer): is it the GCS port "
            "`ray start --head` printed?",
        )


def _read(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def join_cluster(address: str, *, logging_level: int = logging.INFO) -> None:
    """Probe ``address``, then join it as a driver in the bus's namespace.

    Raises:
        ClusterUnreachable: see :func:`probe_address`; also when Ray itself refuses.
    """
    probe_address(address)
    _check_token(address)
    try:
        ray.init(
            address=address,
            namespace=NAMESPACE,
            log_to_driver=False,
            logging_level=logging_level,
        )
    except ValueError as exc:  # e.g. ray:// without the `ray[client]` extra installed
        raise ClusterUnreachable(address, str(exc).strip().splitlines()[0]) from None
    except ConnectionError as exc:
        raise ClusterUnreachable(address, _with_token_hint(address, str(exc))) from None


def _check_token(address: str) -> None:
    """Refuse at once a GCS that wants a token this process does not send (or a wrong one).

    Only a plain GCS address (``host:port``): ``ray://`` goes to the Ray Client server,
    ``auto`` and ``local`` are Ray's to resolve. Anything but an authentication refusal
    is left to ``ray.init``, which reports it as before.
    """
    if address in ("auto", "local") or "://" in address:
        return
    # Ray's own GCS client, as ray.init connects: private, but the only client that
    # speaks the GCS's protocol and token scheme (Ray 2.60 ships no Python gRPC).
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # compiled, unstubbed
    from ray.exceptions import AuthenticationError

    try:
        GcsClient(address=address)
    except AuthenticationError as exc:
        said = str(exc).strip().split(". ")[0]  # Ray's first sentence; the rest is advice
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
            reason = f"it refused this process's token ({said}): check {_TOKEN_SOURCES}"
        else:
            reason = (
                f"it wants a token ({said}): set RAY_AUTH_MODE=token, the token in {_TOKEN_SOURCES}"
            )
        raise ClusterUnreachable(address, reason) from None
    except Exception:  # noqa: BLE001 - not this check's verdict: ray.init gives its own
        return


def _with_token_hint(address: str, error: str) -> str:
    reason = error.strip().splitlines()[0] if error.strip() else "refused"
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token" and address != "auto":
        reason += (
            "; if it uses token authentication (`ray start` turns it on by default), "
            f"set RAY_AUTH_MODE=token, with the token in {_TOKEN_SOURCES}"
        )
    return reason
