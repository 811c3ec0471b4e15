"""Access tokens of an OAuth 2.1 authorization server, checked as a resource server would.

The MCP authorization spec makes the gateway an OAuth 2.1 resource server: it accepts
only access tokens the configured issuer minted for this resource (its ``audience``).

* JWTs (RFC 9068 style) are checked locally: an asymmetric signature by a key of the
  issuer's JWKS (``none`` and HMAC never pass), ``iss``, ``aud``, ``exp``, ``nbf`` and
  ``iat`` with a bounded clock leeway.
* Opaque tokens - or every token, with ``introspection.always`` - are asked about at the
  issuer's introspection endpoint (RFC 7662), with the gateway's own client credentials,
  at most ``introspection.max_in_flight`` at a time.

The issuer's metadata (RFC 8414, else OpenID Connect discovery) and its keys are cached.
A token signed by a key we do not know yet triggers one refetch of the JWKS, but at
most one per ``jwks_refresh_min_interval_s`` whatever the number of such tokens, so a
flood of made-up ``kid`` values cannot hammer the identity provider. Every request to
the issuer is bounded by ``fetch_timeout_s``; when the issuer cannot be reached and no
keys are cached, tokens are refused (fail closed) with
:class:`AuthorizationServerUnavailable` rather than waited on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2 as httpx
import jwt

from cluster.gateway.policy.settings import OAuthConfig
from transports.errors import BusError
from transports.labels import label_problem

__all__ = [
    "AuthorizationServerUnavailable",
    "TokenPrincipal",
    "TokenRefused",
    "TokenVerifier",
    "metadata_urls",
    "missing_scopes",
]

logger = logging.getLogger(__name__)

_MAX_DOCUMENT_BYTES = 1024 * 1024  # metadata, JWKS and introspection answers
_REQUIRED_CLAIMS = ["exp", "iss", "aud"]


class TokenRefused(BusError):
    """The presented token is not one this resource accepts (HTTP 401, ``invalid_token``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class AuthorizationServerUnavailable(BusError):
    """The issuer's metadata, keys or introspection could not be had (HTTP 503)."""

    retriable = True

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class TokenPrincipal:
    """Who a valid access token speaks for.

    Attributes:
        name: the principal allow-lists, rate limits and audit records know
            (the configured ``principal_claim``, ``sub`` by default).
        subject: the ``sub`` claim.
        client_id: the OAuth client the token was issued to (``client_id`` or ``azp``).
        scopes: the granted scopes.
        valid_until: when the door stops accepting the token (its ``exp`` plus the
            clock leeway, epoch seconds), or None; a connection that outlives a request
            (``/ws``) ends then.
        labels: what the token's claims pin (``oauth.label_claims``): every call of its
            bearer carries them, and a call asking otherwise is refused (README Regions).
    """

    name: str
    subject: str | None
    client_id: str | None
    scopes: frozenset[str]
    valid_until: float | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


def audit_fields(token: TokenPrincipal) -> dict[str, Any]:
    """Who an access token speaks for, as audit records carry it (never the token)."""
    return {"subject": token.subject, "client_id": token.client_id, "scopes": sorted(token.scopes)}


def missing_scopes(granted: Iterable[str], needed: Iterable[str]) -> list[str]:
    """The scopes of ``needed`` that ``granted`` lacks, in ``needed``'s order."""
    have = set(granted)
    return [scope for scope in needed if scope not in have]


def metadata_urls(issuer: str) -> list[str]:
    """Where the issuer's metadata may be: RFC 8414's path-inserted form, then OIDC's."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    rfc8414 = urlunsplit(
        (parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", "")
    )
    oidc = issuer.rstrip("/") + "/.well-known/openid-configuration"
    return [rfc8414, oidc]


def _scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    listed = claims.get("scp")  # the form some issuers (Azure AD, Okta) use
    if isinstance(listed, list):
        return frozenset(s for s in listed if isinstance(s, str))
    return frozenset()


def _audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []


class TokenVerifier:
    """Checks access tokens against the configured issuer; shared by every request.

    Args:
        config: the ``oauth`` policy.
        clock: monotonic seconds, for the caches and the refresh bound.
        wall_clock: epoch seconds, for ``exp`` of introspected tokens.
    """

    def __init__(
        self,
        config: OAuthConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        self._wall_clock = wall_clock
        self._http: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._jwks_uri: str | None = config.jwks_url
        self._metadata_at: float | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_at: float | None = None
        self._last_fetch_at: float | None = None
        self._last_failure: str | None = None
        self._introspections: asyncio.Semaphore | None = None
        self.jwks_fetches = 0
        """How many times the JWKS was requested (the refresh bound is observable)."""

    async def aclose(self) -> None:
        """Close the HTTP client (it is created on first use, on the serving loop)."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- tokens --------------------------------------------------------------------

    async def verify(self, token: str) -> TokenPrincipal:
        """The principal of a valid token.

        Raises:
            TokenRefused: the token is malformed, unsigned, badly signed, expired, not yet
                valid, from another issuer, for another audience, or inactive.
            AuthorizationServerUnavailable: the issuer could not be asked in time and
                nothing cached answers the question.
        """
        if len(token) > self.config.max_token_bytes:
            raise TokenRefused("token too large")
        looks_like_jwt = token.count(".") == 2
        introspection = self.config.introspection
        if introspection is not None and (introspection.always or not looks_like_jwt):
            return self._principal(await self._introspect(token))
        if not looks_like_jwt:
            raise TokenRefused("malformed token: not a JWT")
        return self._principal(await self._decode(token))

    async def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise TokenRefused("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            raise TokenRefused(f"signature algorithm {alg!r} not accepted")
        kid = header.get("kid")
        key = await self._key(kid if isinstance(kid, str) else None, alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_s,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused("token expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRefused("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused("token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenRefused("token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise TokenRefused("bad signature") from None
        except jwt.InvalidTokenError as exc:
            raise TokenRefused(f"invalid token: {exc}") from None
        return claims

    def _principal(self, claims: dict[str, Any]) -> TokenPrincipal:
        subject = claims.get("sub")
        client = claims.get("client_id", claims.get("azp"))
        name = claims.get(self.config.principal_claim)
        if not isinstance(name, str) or not name:
            raise TokenRefused(f"token has no {self.config.principal_claim!r} claim")
        return TokenPrincipal(
            name=name,
            subject=subject if isinstance(subject, str) else None,
            client_id=client if isinstance(client, str) else None,
            scopes=_scopes_of(claims),
            valid_until=_valid_until(claims, self.config.leeway_s),
            labels=self._pinned_labels(claims),
        )

    def _pinned_labels(self, claims: dict[str, Any]) -> dict[str, str]:
        """The labels the token's claims pin; a claim that is no valid label value refuses
        the token (fail closed: a pin must never silently drop)."""
        labels = {}
        for label, claim in self.config.label_claims.items():
            value = claims.get(claim)
            if value is None:
                continue  # not pinned: the bearer's calls choose (router.regions.require)
            if not isinstance(value, str) or label_problem(label, value) is not None:
                raise TokenRefused(f"token claim {claim!r} is not a valid {label!r} label")
            labels[label] = value
        return labels

    # -- keys ----------------------------------------------------------------------

    async def _key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        now = self._clock()
        stale = self._keys_at is None or now - self._keys_at > self.config.metadata_ttl_s
        found = self._pick(kid, alg)
        if found is not None and not stale:
            return found
        async with self._lock:  # one fetch for every request that waits on it
            found = self._pick(kid, alg)
            fresh = self._keys_at is not None and self._keys_at >= now
            if fresh and found is not None:
                return found
            last = self._last_fetch_at
            if last is not None and self._clock() - last < self.config.jwks_refresh_min_interval_s:
                return self._settle(found, kid)
            try:
                await self._refresh_keys()
            except AuthorizationServerUnavailable as exc:
                # Keys we had stay good while the issuer is away; without any, fail closed.
                if found is not None:
                    logger.warning("keeping cached JWKS: %s", exc)
                    return found
                raise
            return self._settle(self._pick(kid, alg), kid)

    def _settle(self, found: jwt.PyJWK | None, kid: str | None) -> jwt.PyJWK:
        if found is not None:
            return found
        if not self._keys and self._last_failure is not None:
            raise AuthorizationServerUnavailable(self._last_failure)
        raise TokenRefused(f"unknown signing key {kid!r}" if kid else "token names no key")

    def _pick(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        if kid is not None:
            key = self._keys.get(kid)
            return key if key is not None and key.algorithm_name == alg else None
        # No kid: acceptable only when exactly one key fits the algorithm.
        fitting = [k for k in self._keys.values() if k.algorithm_name == alg]
        return fitting[0] if len(fitting) == 1 else None

    async def _refresh_keys(self) -> None:
        self._last_fetch_at = self._clock()
        try:
            uri = await self._jwks_location()
            self.jwks_fetches += 1
            document = await self._get_json(uri, "the issuer's JWKS")
            keys = self._parse_jwks(document, uri)
        except AuthorizationServerUnavailable as exc:
            self._last_failure = str(exc)
            raise
        self._keys, self._keys_at, self._last_failure = keys, self._clock(), None
        logger.info("loaded %d signing keys of %s", len(keys), self.config.issuer)

    async def _jwks_location(self) -> str:
        if self.config.jwks_url is not None:
            return self.config.jwks_url
        fresh = (
            self._metadata_at is not None
            and self._clock() - self._metadata_at <= self.config.metadata_ttl_s
        )
        if self._jwks_uri is None or not fresh:
            metadata = await self._metadata()
            uri = metadata.get("jwks_uri")
            if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
                raise AuthorizationServerUnavailable(
                    f"the metadata of {self.config.issuer} has no usable jwks_uri"
                )
            self._jwks_uri, self._metadata_at = uri, self._clock()
        return self._jwks_uri

    async def _metadata(self) -> dict[str, Any]:
        problems = []
        for url in metadata_urls(self.config.issuer):
            try:
                metadata = await self._get_json(url, "the issuer's metadata")
            except AuthorizationServerUnavailable as exc:
                problems.append(str(exc))
                continue
            # RFC 8414 3.3: a document naming another issuer must not be used.
            if metadata.get("issuer") != self.config.issuer:
                problems.append(f"{url} names issuer {metadata.get('issuer')!r}")
                continue
            return metadata
        raise AuthorizationServerUnavailable("; ".join(problems))

    @staticmethod
    def _parse_jwks(document: dict[str, Any], uri: str) -> dict[str, jwt.PyJWK]:
        entries = document.get("keys")
        if not isinstance(entries, list):
            raise AuthorizationServerUnavailable(f"the JWKS at {uri} has no 'keys' list")
        keys: dict[str, jwt.PyJWK] = {}
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                continue  # encryption keys (Keycloak publishes one) sign nothing
            kid = entry.get("kid")
            try:
                key = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue  # a key type we cannot use must not hide the others
            keys[kid if isinstance(kid, str) else f"#{len(keys)}"] = key
        if not keys:
            raise AuthorizationServerUnavailable(f"the JWKS at {uri} has no usable signing key")
        return keys

    # -- introspection (RFC 7662) ----------------------------------------------------

    async def _introspect(self, token: str) -> dict[str, Any]:
        settings = self.config.introspection
        assert settings is not None
        if self._introspections is None:
            self._introspections = asyncio.Semaphore(settings.max_in_flight)
        # Every opaque token costs the issuer a request: a flood of made-up ones is held
        # to max_in_flight at a time, and those that cannot get a turn in time fail closed.
        try:
            async with asyncio.timeout(self.config.fetch_timeout_s):
                await self._introspections.acquire()
        except TimeoutError:
            raise AuthorizationServerUnavailable(
                f"{settings.max_in_flight} token introspections already in flight"
            ) from None
        try:
            answer = await self._request_json(
                "POST",
                settings.url,
                "the introspection endpoint",
                data={"token": token, "token_type_hint": "access_token"},
                auth=(settings.client_id, settings.client_secret.get_secret_value()),
            )
        finally:
            self._introspections.release()
        if answer.get("active") is not True:
            raise TokenRefused("token is not active")
        issuer = answer.get("iss")
        if issuer is not None and issuer != self.config.issuer:
            raise TokenRefused("token is from another issuer")
        if self.config.audience not in _audiences(answer):
            raise TokenRefused("token is for another audience")
        now, leeway = self._wall_clock(), self.config.leeway_s
        exp, nbf = answer.get("exp"), answer.get("nbf")
        if isinstance(exp, int | float) and exp + leeway <= now:
            raise TokenRefused("token expired")
        if isinstance(nbf, int | float) and nbf - leeway > now:
            raise TokenRefused("token not yet valid")
        return answer

    # -- HTTP ------------------------------------------------------------------------

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        return await self._request_json("GET", url, what)

    async def _request_json(
        self, method: str, url: str, what: str, **kwargs: Any
    ) -> dict[str, Any]:
        if self._http is None:
            timeout = httpx.Timeout(self.config.fetch_timeout_s)
            self._http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        try:
            # The whole exchange is bounded, not each read: a server dripping bytes
            # would otherwise hold a request for many timeouts.
            async with asyncio.timeout(self.config.fetch_timeout_s):
                async with self._http.stream(method, url, **kwargs) as response:
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > _MAX_DOCUMENT_BYTES:
                            raise AuthorizationServerUnavailable(f"{what} at {url} is too large")
                    status = response.status_code
        except TimeoutError:
            raise AuthorizationServerUnavailable(
                f"{what} at {url} did not answer within {self.config.fetch_timeout_s:g} s"
            ) from None
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise AuthorizationServerUnavailable(
                f"cannot reach {what} at {url}: {reason}"
            ) from None
        if status != 200:
            raise AuthorizationServerUnavailable(f"{what} at {url} answered HTTP {status}")
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise AuthorizationServerUnavailable(f"{what} at {url} is not JSON") from None
        if not isinstance(document, dict):
            raise AuthorizationServerUnavailable(f"{what} at {url} is not a JSON object")
        return document


def _valid_until(claims: dict[str, Any], leeway_s: float) -> float | None:
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp) + leeway_s
