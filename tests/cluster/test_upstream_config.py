"""Remote pools in the configuration: ``url``, and ``headers`` resolved where it is built."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cluster.config import ConfigError, PoolConfig, parse_config
from cluster.upstream import shown_url


def remote_pool(**fields: Any) -> dict[str, Any]:
    return {"name": "remote", "url": "https://tools.example.com/mcp", **fields}


def problems(pool: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config({"pools": [pool]})
    return caught.value.problems


def test_header_values_take_environment_variables_where_the_config_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UPSTREAM_TOKEN", "s3cret")
    headers = {"Authorization": "Bearer ${UPSTREAM_TOKEN}", "X-Price": "$$5"}
    pool = parse_config({"pools": [remote_pool(headers=headers)]}).pools[0]
    values = {name: value.get_secret_value() for name, value in pool.headers.items()}
    assert values == {"Authorization": "Bearer s3cret", "X-Price": "$5"}
    # Resolved once: the same configuration validated again keeps the values.
    again = PoolConfig.model_validate(pool.model_dump())
    assert again.headers["Authorization"].get_secret_value() == "Bearer s3cret"


def test_an_unset_variable_is_one_line_naming_the_pool_header_and_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("UPSTREAM_TOKEN", raising=False)
    assert problems(remote_pool(headers={"Authorization": "Bearer ${UPSTREAM_TOKEN}"})) == [
        "pools[0]: pool 'remote', header 'Authorization': "
        "environment variable UPSTREAM_TOKEN is not set"
    ]


def test_secrets_show_nowhere_a_configuration_is_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_TOKEN", "s3cret")
    pool = parse_config(
        {
            "pools": [
                remote_pool(
                    url="https://tools.example.com/mcp?api_key=k3y",
                    headers={"Authorization": "Bearer ${UPSTREAM_TOKEN}"},
                )
            ]
        }
    ).pools[0]
    shown = f"{pool!r} {pool} {pool.model_dump_json()}"
    assert "s3cret" not in shown
    assert "k3y" not in repr(pool)
    assert "https://tools.example.com/mcp" in repr(pool)


@pytest.mark.parametrize(
    ("pool", "problem"),
    [
        (remote_pool(url="ftp://h/mcp"), "pools[0]: url must start with http:// or https://"),
        (
            remote_pool(url="https:///mcp"),
            "pools[0]: url must name a host, e.g. https://tools.example.com/mcp",
        ),
        (
            remote_pool(url="https://me:pw@h/mcp"),
            "pools[0]: url must not carry credentials: give them in headers",
        ),
        (
            {"name": "r", "server": "a:b", "headers": {"X-Key": "v"}},
            "pools[0]: headers are sent to a url's server: give url too",
        ),
        (
            remote_pool(env={"A": "1"}),
            "pools[0]: env is for a server the pool runs; a url's server runs elsewhere",
        ),
        (
            remote_pool(command=["x"]),
            "pools[0]: give exactly one of server, command, tools or url",
        ),
        (
            remote_pool(headers={"Mcp-Session-Id": "x"}),
            "pools[0]: pool 'remote', header 'Mcp-Session-Id': "
            "set by the MCP transport itself, not configurable",
        ),
        (
            remote_pool(headers={"X-Key": "pa$word"}),
            "pools[0]: pool 'remote', header 'X-Key': a '$' must start ${NAME} or be written '$$'",
        ),
        (
            remote_pool(headers={"X-Key": "${not-a-name}"}),
            "pools[0]: pool 'remote', header 'X-Key': a '$' must start ${NAME} or be written '$$'",
        ),
        (
            remote_pool(headers={"bad name": "v"}),
            "pools[0]: pool 'remote': 'bad name' is not an HTTP header name",
        ),
    ],
)
def test_bad_remote_pools_fail_naming_the_reason(pool: dict[str, Any], problem: str) -> None:
    assert problems(pool) == [problem]


def test_a_shown_url_keeps_no_query_and_no_credentials() -> None:
    assert shown_url("https://u:p@h:8443/a/mcp?key=1#x") == "https://h:8443/a/mcp"


def test_config_check_accepts_a_remote_pool_without_reaching_it(tmp_path: Path) -> None:
    path = tmp_path / "bus.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: remote
            pools:
              - name: tools
                url: "http://127.0.0.1:9/mcp"
                headers: {Authorization: "Bearer ${CHECK_TOKEN}"}
            """
        )
    )
    command = [sys.executable, "-m", "cluster.cli", "config", "check", str(path)]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=180, env={"CHECK_TOKEN": "t"}, check=False
    )
    assert (run.returncode, run.stdout.splitlines()) == (0, ["ok: bus 'remote', 1 pool"])
    unset = subprocess.run(
        command, capture_output=True, text=True, timeout=180, env={}, check=False
    )
    assert unset.returncode == 1
    assert "environment variable CHECK_TOKEN is not set" in unset.stdout
