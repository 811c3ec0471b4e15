from __future__ import annotations

from typing import Any

import pytest

from cluster.config import ConfigError, parse_config
from cluster.tasks.settings import PoolTasksConfig, rerun_allowed, task_support


def pools(**pool: Any) -> dict[str, Any]:
    return {"pools": [{"name": "jobs", "tools": "cluster.examples.functions", **pool}]}


def test_config_opt_in_beats_the_servers_declaration_and_exact_names_beat_the_wildcard() -> None:
    tasks = PoolTasksConfig(tools={"risk": "required", "*": "optional", "quick": "forbidden"})
    declared = {"execution": {"taskSupport": "required"}}
    assert task_support(tasks, {"name": "risk"}) == "required"
    assert task_support(tasks, {"name": "other"}) == "optional"
    assert task_support(tasks, {"name": "quick", **declared}) == "forbidden"
    assert task_support(None, {"name": "x", **declared}) == "required"
    assert task_support(None, {"name": "x", "execution": {"taskSupport": "bogus"}}) == "forbidden"
    assert task_support(None, {"name": "x"}) == "forbidden"


def test_lost_tasks_run_again_only_when_the_tool_says_it_is_safe_or_config_insists() -> None:
    safe = {"name": "t", "annotations": {"idempotentHint": True}}
    reader = {"name": "t", "annotations": {"readOnlyHint": True}}
    plain = {"name": "t"}
    assert rerun_allowed(None, safe)
    assert rerun_allowed(None, reader)
    assert not rerun_allowed(None, plain)
    assert rerun_allowed(PoolTasksConfig(rerun_lost="always"), plain)
    assert not rerun_allowed(PoolTasksConfig(rerun_lost="never"), safe)


def test_pool_task_settings_are_read_from_yaml_data() -> None:
    config = parse_config(
        {
            **pools(max_sync_s=30, tasks={"tools": {"hypotenuse": "optional"}, "max_attempts": 3}),
            "tasks": {"ttl_s": 600, "max_open_per_principal": 5},
        }
    )
    pool = config.pools[0]
    assert pool.max_sync_s == 30
    assert pool.tasks is not None
    assert pool.tasks.tools == {"hypotenuse": "optional"}
    assert config.tasks.settings().max_open_per_principal == 5


@pytest.mark.parametrize(
    ("pool", "problem"),
    [
        (
            {"timeout_s": 10, "max_sync_s": 20},
            "pools[0]: max_sync_s (20) must not exceed timeout_s",
        ),
        ({"max_sync_s": 0}, "pools[0].max_sync_s: Input should be greater than 0"),
        ({"tasks": {"tools": {"x": "sometimes"}}}, "pools[0].tasks.tools.x: Input should be"),
        ({"tasks": {"tools": {" ": "optional"}}}, "pools[0].tasks.tools: tool names must not"),
        ({"tasks": {"max_attempts": 0}}, "pools[0].tasks.max_attempts: Input should be greater"),
        ({"tasks": {"rerun_lost": "maybe"}}, "pools[0].tasks.rerun_lost: Input should be"),
        ({"tasks": {"tool": {}}}, "pools[0].tasks.tool: Extra inputs are not permitted"),
    ],
)
def test_bad_task_settings_get_one_line_naming_the_field(
    pool: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(pools(**pool))
    assert len(caught.value.problems) == 1
    assert caught.value.problems[0].startswith(problem)
