"""The policy's settings, as the bus config holds them (``gateway.policy``).

Kept apart from the chain that enforces them: every control actor loads the bus config,
and the chain pulls in the MCP SDK (over a second of imports per process on two cores),
which only the gateway needs.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["Limit", "PolicyConfig", "TokenEntry"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenEntry(_Strict):
    principal: str
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="hex SHA-256 of the token")


class Limit(_Strict):
    rate_per_s: float = Field(gt=0)
    burst: float = Field(ge=1)


class PolicyConfig(_Strict):
    tokens: list[TokenEntry] = Field(default_factory=list)
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
