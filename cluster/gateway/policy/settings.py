"""The policy's settings, as the bus config holds them (``gateway.policy``).

Kept apart from the chain that enforces them: every control actor loads the bus config,
and the chain pulls in the MCP SDK (over a second of imports per process on two cores),
which only the gateway needs.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from transports.env_refs import from_env
from transports.labels import LABEL_KEY, checked_labels

__all__ = ["IntrospectionConfig", "Limit", "OAuthConfig", "PolicyConfig", "TokenEntry"]

# Asymmetric signatures only: "none" and the HMAC family (whose key the issuer would
# have to share with us, and which key confusion attacks abuse) are never accepted.
_SIGNATURE_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")  # RFC 6749 3.3 scope-token


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenEntry(_Strict):
    principal: str
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="hex SHA-256 of the token")
    # README "Regions": labels this principal's calls always carry; a call asking for
    # another value of one is refused (1010), never silently rerouted.
    labels: dict[str, str] = Field(default_factory=dict, description="pinned, e.g. {region: eu}")

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return checked_labels(value)


class Limit(_Strict):
    rate_per_s: float = Field(gt=0)
    burst: float = Field(ge=1)


def _http_url(value: str, *, query_allowed: bool = True) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    if parts.fragment or "#" in value:
        raise ValueError("must not contain a fragment")
    if parts.query and not query_allowed:
        raise ValueError("must not contain a query")
    return value


def _scopes(values: list[str]) -> list[str]:
    for value in values:
        if not _SCOPE_TOKEN.match(value):
            raise ValueError(f"{value!r} is not a scope (no spaces, quotes or backslashes)")
    return values


class IntrospectionConfig(_Strict):
    """Where opaque tokens are checked (RFC 7662), and the gateway's client credentials."""

    url: str
    client_id: str = Field(min_length=1)
    client_secret: SecretStr = Field(description="the secret, or ${ENV_VAR} to read it at load")
    always: bool = Field(
        False, description="introspect JWTs too (a revoked token is refused at once)"
    )
    max_in_flight: int = Field(
        8, ge=1, le=256, description="introspections at once; more wait (bounded), then 503"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("client_secret", mode="before")
    @classmethod
    def _from_env(cls, value: Any) -> Any:
        return from_env(value)


class OAuthConfig(_Strict):
    """The gateway as an OAuth 2.1 resource server (MCP authorization, RFC 9728)."""

    issuer: str = Field(description="the authorization server; metadata via RFC 8414 / OIDC")
    audience: str = Field(description="this resource's URL; tokens for another are refused")
    jwks_url: str | None = Field(None, description="instead of the issuer's jwks_uri")
    required_scopes: list[str] = Field(default_factory=list)
    tool_scopes: dict[str, list[str]] = Field(
        default_factory=dict, description="tool -> the further scopes a call of it needs"
    )
    introspection: IntrospectionConfig | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "PS256", "EdDSA"])
    principal_claim: str = Field(
        "sub", description="the claim that names the principal (e.g. azp, client_id)"
    )
    leeway_s: float = Field(30.0, ge=0, le=300, description="clock skew allowed on exp/nbf/iat")
    fetch_timeout_s: float = Field(5.0, gt=0, le=60, description="bound on each IdP request")
    jwks_refresh_min_interval_s: float = Field(
        10.0, ge=0, description="at most one key refetch per interval (unknown kid flood)"
    )
    metadata_ttl_s: float = Field(3600.0, gt=0, description="how long discovery is trusted")
    max_token_bytes: int = Field(8192, ge=256, description="longer Authorization headers: 401")
    label_claims: dict[str, str] = Field(
        default_factory=dict,
        description="label -> the token claim that pins it (e.g. {region: region}, README Regions)",
    )

    @field_validator("issuer", "audience")
    @classmethod
    def _urls(cls, value: str) -> str:
        return _http_url(value, query_allowed=False)

    @field_validator("jwks_url")
    @classmethod
    def _jwks(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)

    @field_validator("required_scopes")
    @classmethod
    def _required(cls, value: list[str]) -> list[str]:
        return _scopes(value)

    @field_validator("tool_scopes")
    @classmethod
    def _per_tool(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for scopes in value.values():
            _scopes(scopes)
        return value

    @field_validator("label_claims")
    @classmethod
    def _label_claims(cls, value: dict[str, str]) -> dict[str, str]:
        for label, claim in value.items():
            if not LABEL_KEY.match(label):
                raise ValueError(f"label key {label!r} must match {LABEL_KEY.pattern}")
            if not claim:
                raise ValueError(f"label {label!r}: the claim name is empty")
        return value

    @field_validator("algorithms")
    @classmethod
    def _signatures(cls, value: list[str]) -> list[str]:
        refused = [alg for alg in value if alg not in _SIGNATURE_ALGORITHMS]
        if refused or not value:
            allowed = ", ".join(sorted(_SIGNATURE_ALGORITHMS))
            raise ValueError(f"{refused or 'none'} not accepted; choose from {allowed}")
        return value

    @property
    def scopes_supported(self) -> list[str]:
        """Every scope this resource checks, required ones first."""
        seen = dict.fromkeys(self.required_scopes)
        for scopes in self.tool_scopes.values():
            seen.update(dict.fromkeys(scopes))
        return list(seen)


class PolicyConfig(_Strict):
    tokens: list[TokenEntry] = Field(default_factory=list)
    oauth: OAuthConfig | None = Field(
        None, description="accept access tokens of an OAuth 2.1 authorization server"
    )
    allow: dict[str, list[str]] | None = Field(
        None,
        description=(
            "principal -> what it may use: tool names, 'prompt:<name>', 'resource:<uri or "
            "template>', '<kind>:*' or '*'; once set, every other request is denied"
        ),
    )
    rate_limit_per_principal: Limit | None = Field(
        None, description="one bucket per principal, spent by every request"
    )
    rate_limit_per_tool: dict[str, Limit] = Field(default_factory=dict)
    validate_arguments: bool = True
    unvalidated_tools: list[str] = Field(
        default_factory=list, description="tools whose arguments the server checks itself"
    )
    redact_results: bool = False
    audit_path: str | None = None
    audit_hmac_key: SecretStr | None = Field(
        None,
        description=(
            "key of the arguments' HMAC in audit records; random per process when unset, "
            "so digests then compare only within one run"
        ),
    )
