from pathlib import Path

import pytest

from actors.worker.server_links import functions_server, load_server_object
from cluster.config import ConfigError, load_config, parse_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bus.yaml"
    path.write_text(text)
    return path


def test_a_valid_file_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
name: demo
pools:
  - name: everything
    server: "cluster.examples.testkit:server"
    min_workers: 1
    max_workers: 8
  - name: calc
    command: ["python", "-m", "cluster.examples.calculator"]
  - name: fns
    tools: "cluster.examples.functions"
""",
        )
    )
    assert [p.name for p in config.pools] == ["everything", "calc", "fns"]
    assert config.pool("everything").max_workers == 8
    assert config.router.max_pending_per_pool == 10_000


@pytest.mark.parametrize(
    ("pools", "expected"),
    [
        (
            "- name: x\n  server: 'a.b:c'\n  command: ['x']",
            "pools[0]: give exactly one of server, command, tools or url",
        ),
        ("- name: x", "pools[0]: give exactly one of server, command, tools or url"),
        (
            "- name: x\n  server: 'a.b:c'\n  min_workers: 5\n  max_workers: 2",
            "min_workers (5) exceeds max_workers (2)",
        ),
        (
            "- name: x\n  server: 'a.b:c'\n  max_concurrency: 0",
            "pools[0].max_concurrency: Input should be greater than or equal to 1",
        ),
        (
            "- name: x\n  server: 'a.b:c'\n  colour: red",
            "pools[0].colour: Extra inputs are not permitted",
        ),
        ("- name: Bad Name\n  server: 'a.b:c'", "pool name 'Bad Name' must match"),
        ("- name: x\n  server: 'no-colon'", "server must look like 'package.module:attribute'"),
        ("- name: x\n  server: 'a.b:c'\n- name: x\n  tools: 'm'", "repeated: x"),
        ("[]", "pools: List should have at least 1 item"),
    ],
)
def test_bad_configs_fail_naming_the_field_and_the_reason(
    tmp_path: Path, pools: str, expected: str
) -> None:
    text = "pools:\n" + "\n".join("  " + line for line in pools.splitlines())
    if pools == "[]":
        text = "pools: []"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    assert expected in str(caught.value)
    assert str(tmp_path / "bus.yaml") in str(caught.value)


def test_unreadable_and_non_yaml_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "pools: [unclosed"))


def test_discovery_ttl_must_outlast_the_heartbeat() -> None:
    with pytest.raises(ConfigError, match="ttl_s must be longer"):
        parse_config(
            {
                "pools": [{"name": "x", "tools": "m"}],
                "discovery": {"heartbeat_interval_s": 2, "ttl_s": 1},
            }
        )


def test_server_import_paths_are_checked() -> None:
    assert load_server_object("cluster.examples.testkit:server").name == "testkit"
    with pytest.raises(ValueError, match="not an MCP server"):
        load_server_object("cluster.examples.functions:hypotenuse")
    with pytest.raises(ImportError):
        load_server_object("no_such_module_x:server")


def test_plain_functions_become_tools_with_schemas_from_type_hints() -> None:
    server = functions_server("cluster.examples.functions")
    tools = {t.name: t for t in server._tool_manager.list_tools()}
    assert set(tools) == {"hypotenuse", "word_count"}
    assert tools["hypotenuse"].parameters["properties"]["a"]["type"] == "number"
