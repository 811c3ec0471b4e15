"""HTTPS on the gateway (`gateway.tls`): a certificate the test makes, the official client.

The gateway serves TLS only once configured so, the client verifies the certificate it
was given, a cleartext request on that port gets no MCP answer, and a certificate or
key that cannot be loaded is one config error naming the field.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import httpx2 as httpx
import mcp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mcp.client.streamable_http import streamable_http_client

from cluster.config import parse_config
from cluster.gateway.server import Gateway
from tests.cluster.gateway.fake_bus import fake_bus
from tests.cluster.gateway.serving import serving
from transports.errors import BusError


def with_tls(tls: dict[str, str]) -> dict[str, object]:
    return {"name": "b", "pools": [{"name": "p", "tools": "x:y"}], "gateway": {"tls": tls}}


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raybus test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


async def test_the_official_client_calls_a_tool_over_https(tmp_path: Path) -> None:
    certfile, keyfile = self_signed(tmp_path)
    tls = {"tls": {"certfile": str(certfile), "keyfile": str(keyfile)}}
    trusted = ssl.create_default_context(cafile=str(certfile))
    async with serving(Gateway(fake_bus()), **tls) as url:
        assert url.startswith("https://127.0.0.1:")
        # Closed here: a keep-alive connection left open would hold the server's shutdown.
        async with httpx.AsyncClient(verify=trusted, timeout=30) as http:
            transport = streamable_http_client(url, http_client=http)
            async with mcp.Client(transport) as client:
                result = await client.call_tool("echo", {"text": "sealed"})
        assert [c.text for c in result.content if isinstance(c, mcp.types.TextContent)] == [
            "sealed"
        ]
        # A client that does not trust the certificate gets no session.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            async with httpx.AsyncClient(timeout=30) as untrusting:
                await untrusting.post(url, json={})
        # Cleartext on the TLS port is not served.
        plain = "http://" + url.removeprefix("https://")
        with pytest.raises(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=30) as cleartext:
                await cleartext.post(plain, json={})


@pytest.mark.parametrize("which", ["certfile", "keyfile"])
def test_a_certificate_or_key_that_cannot_load_is_one_config_error(
    tmp_path: Path, which: str
) -> None:
    certfile, keyfile = self_signed(tmp_path)
    tls = {"certfile": str(certfile), "keyfile": str(keyfile)}
    tls[which] = str(tmp_path / "missing.pem")
    with pytest.raises(BusError) as raised:
        parse_config(with_tls(tls))
    line = str(raised.value)
    assert "gateway.tls: " in line
    assert "cannot load certificate" in line
    assert "No such file or directory" in line


def test_a_key_that_does_not_match_its_certificate_is_refused(tmp_path: Path) -> None:
    certfile, _ = self_signed(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, wrong_key = self_signed(other)
    tls = {"certfile": str(certfile), "keyfile": str(wrong_key)}
    with pytest.raises(BusError, match=r"gateway\.tls: .*cannot load certificate"):
        parse_config(with_tls(tls))
