from pathlib import Path

import pytest

from actors.worker.sdk_link import functions_server, load_server_object
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


REGIONAL_POOLS = [
    {"name": "calc-eu", "server": "x.y:z", "labels": {"region": "eu"}},
    {"name": "calc-us", "server": "x.y:z", "labels": {"region": "us"}, "min_workers": 0},
]


def test_router_regions_learn_each_pools_region_from_its_labels() -> None:
    config = parse_config(
        {"pools": REGIONAL_POOLS, "router": {"regions": {"failover": {"eu": ["us"]}}}}
    )
    regions = config.router.regions
    assert regions is not None
    assert regions.pool_regions == {"calc-eu": "eu", "calc-us": "us"}
    assert regions.waking_pools == {"calc-us"}
    # A dumped configuration reads back the same (the derived part agrees with itself).
    assert parse_config(config.model_dump(mode="json")).router == config.router


@pytest.mark.parametrize(
    ("regions", "line"),
    [
        (
            {"failover": {"eu": ["ap"]}},
            "router.regions.failover.eu[0]: no pool carries region 'ap'",
        ),
        ({"default": "ap"}, "router.regions.default: no pool carries region 'ap'"),
        ({"require": True, "default": "eu"}, "router.regions: give require or default, not both"),
        ({"label": "zone"}, "router.regions: no pool carries the label 'zone'"),
        (
            {"failover": {"eu": ["eu"]}},
            "router.regions: failover.eu: a region cannot fail over to itself",
        ),
        (
            {"pool_regions": {"calc-eu": "us"}},
            "router.regions.pool_regions: derived from pools[].labels; do not set it",
        ),
    ],
)
def test_a_bad_regions_section_is_one_line_naming_its_field(
    regions: dict[str, object], line: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"pools": REGIONAL_POOLS, "router": {"regions": regions}})
    assert caught.value.problems == [line]


def test_a_bad_label_is_one_line_naming_the_pool() -> None:
    pools = [{"name": "a", "server": "x.y:z", "labels": {"region": "EU"}}]
    with pytest.raises(ConfigError) as caught:
        parse_config({"pools": pools})
    assert caught.value.problems == [
        "pools[0].labels: value of label 'region' must match ^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
    ]


def test_a_token_pinned_to_a_region_no_pool_carries_is_one_line() -> None:
    token = {"principal": "ship-7", "sha256": "a" * 64, "labels": {"region": "ap"}}
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "pools": REGIONAL_POOLS,
                "router": {"regions": {}},
                "gateway": {"policy": {"tokens": [token]}},
            }
        )
    assert caught.value.problems == [
        "gateway.policy.tokens[0].labels.region: no pool carries region 'ap'"
    ]
