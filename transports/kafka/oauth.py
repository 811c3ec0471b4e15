"""SASL/OAUTHBEARER tokens for aiokafka: a static token, or the OAuth 2.0 client
credentials grant (RFC 6749 section 4.4), fetched once per client and renewed before
it expires. Configured by :class:`~transports.kafka.security.KafkaOAuth`.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka.abc import AbstractTokenProvider
from aiokafka.errors import KafkaError

from transports.kafka.security import KafkaOAuth

__all__ = ["TokenProvider"]

# A fetched token is renewed this long before it expires, so no connection presents one
# that lapses during its handshake.
_TOKEN_RENEW_MARGIN_S = 60.0
_MAX_TOKEN_RESPONSE_BYTES = 64 * 1024


class TokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """What aiokafka asks for a token on every new connection; one fetch serves many.

    Raises (from :meth:`token`): KafkaError, one line naming the token URL and the HTTP
    status, never the secret.
    """

    def __init__(self, oauth: KafkaOAuth) -> None:
        self._oauth = oauth
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if self._oauth.token is not None:
            return self._oauth.token.get_secret_value()
        async with self._lock:  # every connection of a client shares one fetch
            if self._token is None or time.monotonic() >= self._renew_at:
                self._token, lifetime_s = await self._fetch()
                self._renew_at = time.monotonic() + max(0.0, lifetime_s - _TOKEN_RENEW_MARGIN_S)
            return self._token

    async def _fetch(self) -> tuple[str, float]:
        import httpx2 as httpx  # only clients configured for the grant need it

        oauth = self._oauth
        assert oauth.token_url is not None
        assert oauth.client_id is not None
        assert oauth.client_secret is not None
        form = {"grant_type": "client_credentials"}
        if oauth.scope:
            form["scope"] = oauth.scope
        where = f"token request to {oauth.token_url}"
        try:
            async with httpx.AsyncClient(timeout=oauth.timeout_s) as http:
                reply = await http.post(
                    oauth.token_url,
                    data=form,
                    auth=(oauth.client_id, oauth.client_secret.get_secret_value()),
                )
        except httpx.HTTPError as exc:
            raise KafkaError(f"{where} failed: {type(exc).__name__}") from None
        if reply.status_code != 200 or len(reply.content) > _MAX_TOKEN_RESPONSE_BYTES:
            raise KafkaError(f"{where} was refused with HTTP {reply.status_code}")
        try:
            body = reply.json()
            token = body["access_token"]
            lifetime_s = float(body.get("expires_in", 300))
        except (ValueError, KeyError, TypeError):
            raise KafkaError(f"{where} returned no access_token") from None
        if not isinstance(token, str) or not token:
            raise KafkaError(f"{where} returned no access_token")
        return token, lifetime_s
