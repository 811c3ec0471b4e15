"""The ``gateway.policy.oauth`` section: checked when the config is loaded, one line per
problem naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.cli.preflight import gateway_problem
from cluster.config import ConfigError, parse_config

GOOD = {"issuer": "https://idp.example/realms/mcp", "audience": "http://127.0.0.1:8765/mcp"}


def problems_of(oauth: dict[str, Any]) -> list[str]:
    data: dict[str, Any] = {"name": "x", "pools": [{"name": "p", "tools": "x:y"}]}
    data["gateway"] = {"policy": {"oauth": oauth}}
    with pytest.raises(ConfigError) as invalid:
        parse_config(data)
    return invalid.value.problems


def test_the_documented_example_loads_with_the_secret_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RAYBUS_TEST_INTROSPECTION_SECRET", "s3cret")
    oauth = {
        **GOOD,
        "jwks_url": None,
        "required_scopes": ["mcp"],
        "tool_scopes": {"add": ["tools.add"]},
        "introspection": {
            "url": "https://idp.example/realms/mcp/protocol/openid-connect/token/introspect",
            "client_id": "gateway",
            "client_secret": "${RAYBUS_TEST_INTROSPECTION_SECRET}",
        },
    }
    data: dict[str, Any] = {"name": "x", "pools": [{"name": "p", "tools": "x:y"}]}
    data["gateway"] = {"policy": {"oauth": oauth}}
    loaded = parse_config(data).gateway.policy.oauth
    assert loaded is not None
    assert loaded.introspection is not None
    assert loaded.introspection.client_secret.get_secret_value() == "s3cret"
    assert loaded.scopes_supported == ["mcp", "tools.add"]
    assert "s3cret" not in repr(loaded)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"issuer": "idp.example"}, "gateway.policy.oauth.issuer: must be an absolute http(s) URL"),
        (
            {"audience": "http://127.0.0.1:8765/mcp#frag"},
            "gateway.policy.oauth.audience: must not contain a fragment",
        ),
        (
            {"issuer": "https://idp.example/realms/mcp?x=1"},
            "gateway.policy.oauth.issuer: must not contain a query",
        ),
        (
            {"jwks_url": "file:///etc/keys.json"},
            "gateway.policy.oauth.jwks_url: must be an absolute http(s) URL",
        ),
        (
            {"required_scopes": ["two words"]},
            "gateway.policy.oauth.required_scopes: 'two words' is not a scope "
            "(no spaces, quotes or backslashes)",
        ),
        (
            {"tool_scopes": {"add": ['say"hi']}},
            "gateway.policy.oauth.tool_scopes: 'say\"hi' is not a scope "
            "(no spaces, quotes or backslashes)",
        ),
        (
            {"leeway_s": -1},
            "gateway.policy.oauth.leeway_s: Input should be greater than or equal to 0",
        ),
        (
            {
                "introspection": {
                    "url": "https://idp.example/i",
                    "client_id": "g",
                    "client_secret": "${RAYBUS_TEST_SURELY_UNSET}",
                }
            },
            "gateway.policy.oauth.introspection.client_secret: "
            "environment variable RAYBUS_TEST_SURELY_UNSET is not set",
        ),
        ({"audiense": "typo"}, "gateway.policy.oauth.audiense: Extra inputs are not permitted"),
    ],
)
def test_a_bad_field_is_named_in_one_line(change: dict[str, Any], problem: str) -> None:
    assert problems_of({**GOOD, **change}) == [problem]


@pytest.mark.parametrize("algorithm", ["none", "HS256"])
def test_unsigned_and_symmetric_algorithms_cannot_be_configured(algorithm: str) -> None:
    [problem] = problems_of({**GOOD, "algorithms": ["RS256", algorithm]})
    assert problem.startswith(f"gateway.policy.oauth.algorithms: ['{algorithm}'] not accepted")


def test_oauth_counts_as_authentication_for_binding_beyond_loopback() -> None:
    def bound_everywhere(policy: dict[str, Any]) -> Any:
        gateway = {"host": "0.0.0.0", "policy": policy}
        return parse_config(
            {"name": "x", "pools": [{"name": "p", "tools": "x:y"}], "gateway": gateway}
        )

    assert gateway_problem(bound_everywhere({"oauth": GOOD})) is None
    assert (
        gateway_problem(bound_everywhere({})) == "only loopback is allowed without authentication"
    )
