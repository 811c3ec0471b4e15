"""A real OAuth 2.1 / OpenID Connect authorization server on 127.0.0.1: Keycloak.

The gateway's OAuth support (``cluster.gateway.policy.oauth``) is tested against it:
real discovery (RFC 8414 and OIDC), real JWKS, real client-credentials tokens and real
introspection (RFC 7662). The server comes from Maven Central through the raybus cache
(``keycloak_dist``, which also builds it once); each start copies it into a scratch
directory (Keycloak writes its database beside its binaries), imports the given realms
and runs the optimized server over plain HTTP with an embedded H2 database, bound to
127.0.0.1 on free ports - a test server, not a production setup. "Ready" means the
master realm's discovery document is served, which happens only after the imports.

On two busy cores a start takes 40 s to two minutes (the JVM and Quarkus warming up);
size ``ready_timeout_s`` for that.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx2 as httpx

from cluster.services.base import Launch, LocalService
from cluster.services.errors import ServiceError
from cluster.services.keycloak_dist import (
    KEYCLOAK_VERSION,
    KeycloakDistribution,
    fetch_distribution,
)
from cluster.services.process import LOOPBACK, free_port
from cluster.services.state import ServiceName

__all__ = ["KEYCLOAK_URL_ENV", "KeycloakService"]

logger = logging.getLogger(__name__)

KEYCLOAK_URL_ENV = "RAYBUS_KEYCLOAK_URL"
_SERVICE = "keycloak"
_DISCOVERY = "/realms/master/.well-known/openid-configuration"


class KeycloakService(LocalService):
    """Keycloak in development mode on 127.0.0.1, with realms imported at start.

    Args:
        cache_dir: where the distribution is cached (fetched on first use).
        realms: realm representations (Keycloak's JSON export format) to import.
        version: the Keycloak version.
        heap_max_mb: the JVM's maximum heap.
        ready_timeout_s: how long :meth:`start` waits for the server to answer
            (fetching is bounded separately by ``fetch_timeout_s``).
        fetch_timeout_s: bound on the one-time Maven download.
        java_home: a JDK (17 or newer) to run it with; by default ``java`` on ``PATH``.
        mvn: the ``mvn`` executable; by default the one on ``PATH``.
    """

    name = ServiceName.KEYCLOAK
    env_var = KEYCLOAK_URL_ENV

    def __init__(
        self,
        cache_dir: Path,
        *,
        realms: Sequence[Mapping[str, Any]] = (),
        version: str = KEYCLOAK_VERSION,
        heap_max_mb: int = 512,
        ready_timeout_s: float = 300.0,
        fetch_timeout_s: float = 900.0,
        java_home: str | None = None,
        mvn: str | None = None,
    ) -> None:
        super().__init__(ready_timeout_s=ready_timeout_s)
        self._cache_dir = cache_dir
        self._realms = [dict(realm) for realm in realms]
        self._version = version
        self._heap_max_mb = heap_max_mb
        self._fetch_timeout_s = fetch_timeout_s
        self._java_home = java_home
        self._mvn = mvn
        self._distribution: KeycloakDistribution | None = None

    @property
    def url(self) -> str:
        """The server's base URL (``http://127.0.0.1:<port>``)."""
        return self.endpoint

    def issuer(self, realm: str) -> str:
        """The issuer identifier of ``realm`` on this server."""
        return f"{self.endpoint}/realms/{realm}"

    @classmethod
    async def probe(cls, endpoint: str, *, timeout_s: float) -> bool:
        """Whether the server at ``endpoint`` serves the master realm's discovery."""
        try:
            async with httpx.AsyncClient(timeout=timeout_s) as client:
                response = await client.get(endpoint + _DISCOVERY)
        except httpx.HTTPError as exc:
            logger.debug("keycloak at %s does not answer yet: %s", endpoint, exc)
            return False
        return response.status_code == 200

    async def _prepare(self) -> None:
        if self._java_home is None and shutil.which("java") is None:
            raise ServiceError(
                _SERVICE, f"`java` is not on PATH; Keycloak {self._version} needs 17+"
            )
        self._distribution = await fetch_distribution(
            self._cache_dir,
            self._version,
            mvn=self._mvn,
            java_home=self._java_home,
            timeout_s=self._fetch_timeout_s,
        )

    async def _launch(self, run_dir: Path, log_path: Path) -> Launch:
        assert self._distribution is not None
        home = run_dir / "keycloak"
        try:
            await asyncio.to_thread(shutil.copytree, self._distribution.home, home, symlinks=True)
            imports = home / "data" / "import"
            imports.mkdir(parents=True, exist_ok=True)
            for index, realm in enumerate(self._realms):
                path = imports / f"realm-{index}.json"
                path.write_text(json.dumps(realm), encoding="utf-8")
        except OSError as exc:
            raise ServiceError(_SERVICE, f"cannot prepare {home}: {exc}") from exc
        http_port, management_port = free_port(), free_port()
        while management_port == http_port:
            management_port = free_port()
        env = dict(os.environ)
        env["JAVA_OPTS_KC_HEAP"] = f"-Xms64m -Xmx{self._heap_max_mb}m"
        if self._java_home is not None:
            env["JAVA_HOME"] = self._java_home
        argv = (
            str(home / "bin" / "kc.sh"),
            "start",
            "--optimized",  # built once in the cache, with keycloak_dist.BUILD_OPTIONS
            "--http-enabled=true",
            "--hostname-strict=false",  # the issuer is the URL clients use: 127.0.0.1
            f"--http-host={LOOPBACK}",
            f"--http-port={http_port}",
            f"--http-management-port={management_port}",
            "--import-realm",
        )
        return Launch(argv=argv, endpoint=f"http://{LOOPBACK}:{http_port}", env=env)
