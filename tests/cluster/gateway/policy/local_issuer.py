"""A small authorization server of our own for the resource-server unit tests.

It serves RFC 8414 metadata, a JWKS and an RFC 7662 introspection endpoint over real
HTTP on 127.0.0.1, and mints tokens with keys made by ``cryptography``. Tests can make
it misbehave (unparseable JWKS, a hang) and count how often its JWKS was fetched. The
real authorization server (Keycloak) is in ``test_oauth_keycloak``.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import jwt
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from cluster.gateway.listener import bind_listener

__all__ = ["LocalIssuer", "local_issuer"]

AUDIENCE = "http://127.0.0.1:8765/mcp"
INTROSPECTION_CLIENT = ("gateway", "gateway-secret")


@dataclass
class LocalIssuer:
    base: str = ""
    rsa_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    ec_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    kid: str = "key-1"
    jwks_fetches: int = 0
    jwks_mode: str = "ok"  # "ok", "garbage" or "hang"
    introspection_hangs: bool = False
    introspections: int = 0  # introspection requests received
    opaque: dict[str, dict[str, Any]] = field(default_factory=dict)
    hang: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def issuer(self) -> str:
        return self.base + "/realms/test"

    def jwks(self) -> dict[str, Any]:
        rsa_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa_key.public_key(), as_dict=True)
        ec_jwk = jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key(), as_dict=True)
        return {
            "keys": [
                {**rsa_jwk, "kid": self.kid, "use": "sig", "alg": "RS256"},
                {**ec_jwk, "kid": "ec-1", "use": "sig", "alg": "ES256"},
            ]
        }

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "user-1",
            "azp": "agent",
            "scope": "mcp tools.echo",
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, *, kid: str | None = None, alg: str = "RS256", **overrides: Any) -> str:
        key: Any = self.ec_key if alg == "ES256" else self.rsa_key
        headers = {"kid": kid or (self.kid if alg == "RS256" else "ec-1")}
        return jwt.encode(self.claims(**overrides), key, algorithm=alg, headers=headers)

    def app(self) -> Starlette:
        async def metadata(request: Request) -> Response:
            return JSONResponse(
                {
                    "issuer": self.issuer,
                    "jwks_uri": self.issuer + "/certs",
                    "token_endpoint": self.issuer + "/token",
                    "introspection_endpoint": self.issuer + "/introspect",
                }
            )

        async def certs(request: Request) -> Response:
            self.jwks_fetches += 1
            if self.jwks_mode == "garbage":
                return PlainTextResponse("<html>not json</html>")
            if self.jwks_mode == "hang":
                await self.hang.wait()
            return JSONResponse(self.jwks())

        async def introspect(request: Request) -> Response:
            auth = request.headers.get("authorization", "")
            expected = "Basic " + _basic(*INTROSPECTION_CLIENT)
            if auth != expected:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
            form = await request.form()
            self.introspections += 1
            if self.introspection_hangs:
                await self.hang.wait()
            answer = self.opaque.get(str(form.get("token")), {"active": False})
            return JSONResponse(answer)

        return Starlette(
            routes=[
                Route("/.well-known/oauth-authorization-server/realms/test", metadata),
                Route("/realms/test/certs", certs),
                Route("/realms/test/introspect", introspect, methods=["POST"]),
            ]
        )


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@asynccontextmanager
async def local_issuer() -> AsyncIterator[LocalIssuer]:
    """A :class:`LocalIssuer` served on a free loopback port for the duration."""
    issuer = LocalIssuer()
    sock = bind_listener("127.0.0.1", 0)
    issuer.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(issuer.app(), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield issuer
    finally:
        issuer.hang.set()
        server.should_exit = True
        async with asyncio.timeout(30):
            await task
        sock.close()
