"""Access tokens checked by the gateway's TokenVerifier, against a real HTTP issuer of
our own (tests/cluster/gateway/policy/local_issuer.py) whose keys we hold."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cluster.gateway.policy.oauth import (
    AuthorizationServerUnavailable,
    TokenRefused,
    TokenVerifier,
    metadata_urls,
)
from cluster.gateway.policy.settings import OAuthConfig
from tests.actors.fakes import FakeClock
from tests.cluster.gateway.policy.local_issuer import (
    AUDIENCE,
    INTROSPECTION_CLIENT,
    LocalIssuer,
    local_issuer,
)


@pytest.fixture
async def issuer() -> AsyncIterator[LocalIssuer]:
    async with local_issuer() as served:
        yield served


def verifier_for(issuer: LocalIssuer, **overrides: Any) -> TokenVerifier:
    settings: dict[str, Any] = {
        "issuer": issuer.issuer,
        "audience": AUDIENCE,
        "required_scopes": ["mcp"],
        "fetch_timeout_s": 2.0,
    }
    settings.update(overrides)
    return TokenVerifier(OAuthConfig.model_validate(settings))


async def refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenRefused) as refused:
        await verifier.verify(token)
    return str(refused.value)


def test_metadata_is_looked_for_where_rfc_8414_then_oidc_put_it() -> None:
    assert metadata_urls("https://idp.example/realms/mcp") == [
        "https://idp.example/.well-known/oauth-authorization-server/realms/mcp",
        "https://idp.example/realms/mcp/.well-known/openid-configuration",
    ]


async def test_a_valid_token_names_its_subject_client_and_scopes(issuer: LocalIssuer) -> None:
    verifier = verifier_for(issuer)
    try:
        principal = await verifier.verify(issuer.token())
        es = await verifier.verify(issuer.token(alg="ES256", sub="user-2"))
    finally:
        await verifier.aclose()
    assert principal.name == "user-1"
    assert principal.subject == "user-1"
    assert principal.client_id == "agent"
    assert principal.scopes == {"mcp", "tools.echo"}
    assert es.name == "user-2"


async def test_the_principal_can_be_named_by_another_claim(issuer: LocalIssuer) -> None:
    verifier = verifier_for(issuer, principal_claim="azp")
    try:
        assert (await verifier.verify(issuer.token())).name == "agent"
    finally:
        await verifier.aclose()


# Times relative to when the test runs, not to when it was collected: under xdist a test
# may run half an hour after collection, and a token "not valid for another 10 minutes"
# made then is valid by the time it is checked.
_IN_SECONDS = ("exp", "nbf")


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": -120}, "token expired"),
        ({"nbf": 600}, "token not yet valid"),
        ({"iss": "http://127.0.0.1:1/realms/other"}, "token is from another issuer"),
        ({"aud": "http://127.0.0.1:8765/other"}, "token is for another audience"),
        ({"aud": None}, "invalid token"),
        ({"exp": None}, "invalid token"),
    ],
)
async def test_tokens_outside_their_validity_or_for_someone_else_are_refused(
    issuer: LocalIssuer, overrides: dict[str, Any], reason: str
) -> None:
    now = int(time.time())
    claims = {
        name: now + value if name in _IN_SECONDS and value is not None else value
        for name, value in overrides.items()
    }
    verifier = verifier_for(issuer)
    try:
        assert (await refusal(verifier, issuer.token(**claims))).startswith(reason)
    finally:
        await verifier.aclose()


async def test_a_token_signed_by_another_key_is_refused(issuer: LocalIssuer) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(issuer.claims(), stranger, algorithm="RS256", headers={"kid": issuer.kid})
    verifier = verifier_for(issuer)
    try:
        assert await refusal(verifier, forged) == "bad signature"
        # A signature changed by one character fails the same way.
        good = issuer.token()
        head, body, signature = good.split(".")
        flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
        assert await refusal(verifier, f"{head}.{body}.{flipped}") == "bad signature"
    finally:
        await verifier.aclose()


def _unsigned(claims: dict[str, Any], alg: str) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': alg, 'kid': 'key-1'})}.{part(claims)}."


async def test_unsigned_and_hmac_tokens_are_refused_whatever_they_claim(
    issuer: LocalIssuer,
) -> None:
    # HS256 keyed with the issuer's public key: the classic key-confusion forgery.
    public_pem = issuer.rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = _unsigned(issuer.claims(), "HS256")[:-1]
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    confused = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    verifier = verifier_for(issuer)
    try:
        assert await refusal(verifier, _unsigned(issuer.claims(), "none")) == (
            "signature algorithm 'none' not accepted"
        )
        assert await refusal(verifier, confused) == "signature algorithm 'HS256' not accepted"
    finally:
        await verifier.aclose()
    assert issuer.jwks_fetches == 0  # refused before any key was looked up


@pytest.mark.parametrize(
    "token", ["not-a-token", "a.b.c", "e30.e30", "....", "eyJhbGciOiJSUzI1NiJ9.%%%.sig"]
)
async def test_malformed_tokens_are_refused(issuer: LocalIssuer, token: str) -> None:
    verifier = verifier_for(issuer)
    try:
        assert (await refusal(verifier, token)).startswith("malformed token")
    finally:
        await verifier.aclose()


async def test_an_oversized_token_is_refused_without_parsing(issuer: LocalIssuer) -> None:
    verifier = verifier_for(issuer, max_token_bytes=1024)
    try:
        assert await refusal(verifier, issuer.token(padding="x" * 2000)) == "token too large"
    finally:
        await verifier.aclose()
    assert issuer.jwks_fetches == 0


async def test_keys_are_cached_and_refetched_when_a_new_kid_appears(issuer: LocalIssuer) -> None:
    verifier = verifier_for(issuer, jwks_refresh_min_interval_s=0)
    try:
        await verifier.verify(issuer.token())
        await verifier.verify(issuer.token())
        assert issuer.jwks_fetches == 1
        issuer.kid = "key-2"  # the issuer rotated its key
        assert (await verifier.verify(issuer.token())).name == "user-1"
        assert issuer.jwks_fetches == 2
    finally:
        await verifier.aclose()


async def test_a_flood_of_unknown_kids_fetches_the_jwks_at_most_once_per_interval(
    issuer: LocalIssuer,
) -> None:
    clock = FakeClock()
    config = {"issuer": issuer.issuer, "audience": AUDIENCE, "jwks_refresh_min_interval_s": 10}
    verifier = TokenVerifier(OAuthConfig.model_validate(config), clock=clock)

    async def flood(tag: str) -> list[BaseException | object]:
        tokens = [issuer.token(kid=f"{tag}-{n}") for n in range(100)]
        return await asyncio.gather(*(verifier.verify(t) for t in tokens), return_exceptions=True)

    try:
        await verifier.verify(issuer.token())
        assert issuer.jwks_fetches == 1
        within = await flood("early")  # within the interval of the first load: no fetch
        clock.advance(11)
        after = await flood("late")  # past it: one refetch for the whole flood
        again = await flood("again")
    finally:
        await verifier.aclose()
    outcomes = within + after + again
    assert all(isinstance(o, TokenRefused) for o in outcomes)
    assert str(after[0]) == "unknown signing key 'late-0'"
    assert issuer.jwks_fetches == 2


async def test_an_unparseable_jwks_fails_closed_with_a_clear_reason(issuer: LocalIssuer) -> None:
    issuer.jwks_mode = "garbage"
    verifier = verifier_for(issuer)
    try:
        with pytest.raises(AuthorizationServerUnavailable) as unavailable:
            await verifier.verify(issuer.token())
    finally:
        await verifier.aclose()
    assert str(unavailable.value) == f"the issuer's JWKS at {issuer.issuer}/certs is not JSON"


async def test_an_issuer_that_hangs_is_given_up_on_within_the_fetch_timeout(
    issuer: LocalIssuer,
) -> None:
    issuer.jwks_mode = "hang"
    verifier = verifier_for(issuer, fetch_timeout_s=1.0)
    try:
        async with asyncio.timeout(30):  # a generous bound: the verifier's own is 1 s
            with pytest.raises(AuthorizationServerUnavailable) as unavailable:
                await verifier.verify(issuer.token())
            # Within the refresh interval the next token fails at once, asking nobody.
            with pytest.raises(AuthorizationServerUnavailable):
                await verifier.verify(issuer.token())
    finally:
        await verifier.aclose()
    assert "did not answer within 1 s" in str(unavailable.value)
    assert issuer.jwks_fetches == 1


async def test_an_issuer_that_is_down_fails_closed() -> None:
    async with local_issuer() as gone:
        config = {"issuer": gone.issuer, "audience": AUDIENCE, "fetch_timeout_s": 2.0}
        token = gone.token()
    verifier = TokenVerifier(OAuthConfig.model_validate(config))
    try:
        with pytest.raises(AuthorizationServerUnavailable) as unavailable:
            await verifier.verify(token)
    finally:
        await verifier.aclose()
    assert "cannot reach the issuer's metadata" in str(unavailable.value)


def _introspecting(issuer: LocalIssuer, always: bool = False) -> TokenVerifier:
    user, secret = INTROSPECTION_CLIENT
    introspection = {
        "url": issuer.issuer + "/introspect",
        "client_id": user,
        "client_secret": secret,
        "always": always,
    }
    return verifier_for(issuer, introspection=introspection)


async def test_opaque_tokens_are_introspected(issuer: LocalIssuer) -> None:
    now = int(time.time())
    active = {
        "active": True,
        "iss": issuer.issuer,
        "aud": [AUDIENCE],
        "sub": "user-9",
        "client_id": "robot",
        "scope": "mcp",
        "exp": now + 60,
    }
    issuer.opaque = {
        "opaque-good": active,
        "opaque-foreign": {**active, "aud": "http://elsewhere/mcp"},
        "opaque-expired": {**active, "exp": now - 120},
        "opaque-revoked": {"active": False},
    }
    verifier = _introspecting(issuer)
    try:
        principal = await verifier.verify("opaque-good")
        assert await refusal(verifier, "opaque-foreign") == "token is for another audience"
        assert await refusal(verifier, "opaque-expired") == "token expired"
        assert await refusal(verifier, "opaque-revoked") == "token is not active"
        assert await refusal(verifier, "never-issued") == "token is not active"
        # A JWT is still checked locally unless `always` is set.
        assert (await verifier.verify(issuer.token())).name == "user-1"
    finally:
        await verifier.aclose()
    assert (principal.name, principal.client_id) == ("user-9", "robot")
    assert principal.scopes == {"mcp"}


async def test_with_always_even_a_well_signed_jwt_must_be_active_at_the_issuer(
    issuer: LocalIssuer,
) -> None:
    verifier = _introspecting(issuer, always=True)
    try:
        assert await refusal(verifier, issuer.token()) == "token is not active"
    finally:
        await verifier.aclose()
    assert issuer.jwks_fetches == 0


async def test_a_flood_of_opaque_tokens_reaches_the_issuer_a_few_at_a_time(
    issuer: LocalIssuer,
) -> None:
    issuer.introspection_hangs = True
    user, secret = INTROSPECTION_CLIENT
    introspection = {
        "url": issuer.issuer + "/introspect",
        "client_id": user,
        "client_secret": secret,
        "max_in_flight": 3,
    }
    verifier = verifier_for(issuer, introspection=introspection, fetch_timeout_s=2.0)
    try:
        async with asyncio.timeout(60):  # generous: each token's own bound is 2-4 s
            outcomes = await asyncio.gather(
                *(verifier.verify(f"opaque-{n}") for n in range(50)), return_exceptions=True
            )
    finally:
        await verifier.aclose()
    assert all(isinstance(o, AuthorizationServerUnavailable) for o in outcomes)
    # Three at a time: the first three, then at most three more once those gave up,
    # while the rest, waiting for a turn since the start, ran out of time - not 50.
    assert 3 <= issuer.introspections <= 6
    reasons = {str(o) for o in outcomes}
    assert "3 token introspections already in flight" in reasons
