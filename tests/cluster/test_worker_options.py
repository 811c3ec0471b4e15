"""Per-pool resources, node labels and runtime envs: checked at config time, secrets hidden."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from cluster.bus import placement_summary
from cluster.cli.status import format_status
from cluster.config import ConfigError, PoolConfig, parse_config
from cluster.worker_options import parse_memory

SECRET = "s3cr3t-value-never-shown"


def pool(**fields: Any) -> PoolConfig:
    return parse_config({"pools": [{"name": "kit", "tools": "m", **fields}]}).pools[0]


def problems(**fields: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        pool(**fields)
    return caught.value.problems


def test_a_pool_asks_ray_for_its_resources_labels_and_runtime_env() -> None:
    kit = pool(
        num_cpus=1,
        num_gpus=0.5,
        memory="2GiB",
        resources={"accel": 1},
        label_selector={"zone": "in(us-a,us-b)", "market": "!spot"},
        runtime_env={"pip": ["requests==2.32.3"], "env_vars": {"LOG_LEVEL": "info"}},
    )
    assert kit.actor_options() == {
        "num_cpus": 1.0,
        "num_gpus": 0.5,
        "memory": 2 * 2**30,
        "resources": {"accel": 1.0},
        "label_selector": {"zone": "in(us-a,us-b)", "market": "!spot"},
        "runtime_env": {"pip": ["requests==2.32.3"], "env_vars": {"LOG_LEVEL": "info"}},
    }
    assert kit.worker_resources == {"CPU": 1, "GPU": 0.5, "memory": 2 * 2**30, "accel": 1}


def test_a_pool_that_declares_nothing_reserves_nothing() -> None:
    kit = pool()
    assert kit.worker_resources == {}
    assert kit.actor_options() == {"num_cpus": 0.0, "runtime_env": None}


def test_a_cpu_bound_pool_runs_two_calls_per_declared_cpu_unless_it_says_otherwise() -> None:
    # The rest wait in the router's queue, where a worker the autoscaler adds takes them.
    assert pool().max_concurrency == 32  # I/O-bound: calls mostly wait
    assert pool(num_cpus=1).max_concurrency == 2
    assert pool(num_cpus=0.25).max_concurrency == 2
    assert pool(num_cpus=2.5).max_concurrency == 5
    assert pool(num_cpus=1, max_concurrency=8).max_concurrency == 8
    assert problems(num_cpus=1, max_concurrency=0)[0].startswith("pools[0].max_concurrency")


def test_runtime_env_fields_raybus_does_not_check_pass_through_to_ray() -> None:
    kit = pool(runtime_env={"uv": ["httpx"], "config": {"setup_timeout_seconds": 600}})
    assert kit.actor_options()["runtime_env"] == {
        "uv": ["httpx"],
        "config": {"setup_timeout_seconds": 600},
    }


@pytest.mark.parametrize(
    ("value", "size"),
    [(1024, 1024), ("512MiB", 512 * 2**20), ("2Gi", 2 * 2**30), ("1.5G", 1_500_000_000)],
)
def test_memory_is_bytes_or_a_size_with_units(value: int | str, size: int) -> None:
    assert parse_memory(value) == size
    assert pool(memory=value).memory == size


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"num_gpus": -1}, "pools[0].num_gpus: Input should be greater than or equal to 0"),
        ({"memory": "lots"}, "pools[0].memory: 'lots' is not a size"),
        (
            {"resources": {"CPU": 2}},
            "pools[0].resources: 'CPU' is not a custom resource: use num_cpus",
        ),
        ({"resources": {"memory": 1}}, "pools[0].resources: 'memory' is not a custom resource"),
        ({"resources": {"accel": -1}}, "pools[0].resources.accel: Input should be greater than"),
        (
            {"resources": {"accel": "many"}},
            "pools[0].resources.accel: Input should be a valid number",
        ),
        # Ray's own rules, named by our field:
        ({"resources": {"accel": 0.00001}}, "pools[0].resources: The precision of the fractional"),
        ({"resources": {"TPU": 3}}, "pools[0].resources: The number of requested 'TPU'"),
        ({"label_selector": {"bad key!": "x"}}, "pools[0].label_selector: Invalid label key"),
        ({"label_selector": {"zone": "in(a,"}}, "pools[0].label_selector: Invalid label selector"),
        ({"runtime_env": {"working_dir": "./src"}}, "pools[0].runtime_env.working_dir: needs URIs"),
        (
            {"runtime_env": {"py_modules": ["s3://b/m.zip", "lib"]}},
            "pools[0].runtime_env.py_modules: needs URIs",
        ),
        ({"runtime_env": {"pip": "requirements.txt"}}, "pools[0].runtime_env.pip: a requirements"),
        (
            {"runtime_env": {"pip": {"packages": []}}},
            "pools[0].runtime_env.pip.packages: List should have at least 1",
        ),
        ({"runtime_env": {"env_vars": {"N": 3}}}, "pools[0].runtime_env.env_vars.N: Input should"),
    ],
)
def test_bad_resources_labels_and_runtime_envs_fail_in_one_line_naming_the_field(
    fields: dict[str, Any], expected: str
) -> None:
    found = problems(**fields)
    assert any(line.startswith(expected) for line in found), found
    assert all("\n" not in line for line in found)


def test_no_config_error_repeats_a_value_from_env() -> None:
    found = problems(env={"API_TOKEN": SECRET, "BAD": 7}, runtime_env={"env_vars": {"T": [SECRET]}})
    assert found, "the bad values are refused"
    assert not any(SECRET in line for line in found), found


def test_env_values_never_show_in_a_configs_repr_str_or_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = parse_config(
        {
            "pools": [
                {
                    "name": "kit",
                    "tools": "m",
                    "env": {"API_TOKEN": SECRET},
                    "runtime_env": {"env_vars": {"DB_PASSWORD": SECRET}},
                }
            ]
        }
    )
    with caplog.at_level(logging.INFO):
        logging.getLogger("raybus.test").info("starting %s / %r", config, config.pools[0])
    for text in (repr(config), str(config), str(config.pools[0]), caplog.text):
        assert SECRET not in text
        assert "API_TOKEN" in text
        assert "DB_PASSWORD" in text
    # The values themselves are intact where they are used.
    assert config.pools[0].env["API_TOKEN"] == SECRET
    assert config.pools[0].actor_options()["runtime_env"]["env_vars"]["DB_PASSWORD"] == SECRET


def test_status_shows_what_workers_reserve_and_env_names_but_never_env_values() -> None:
    kit = pool(
        num_cpus=1,
        resources={"accel": 1},
        label_selector={"zone": "a"},
        labels={"region": "eu"},
        env={"API_TOKEN": SECRET},
        runtime_env={"env_vars": {"LOG_LEVEL": SECRET}},
    )
    row = {
        "workers": 1,
        "queued": 0,
        "oldest_age_s": 0.0,
        "in_flight": 0,
        "breaker": "closed",
        **placement_summary(kit),
    }
    status = {"bus": "demo", "pools": {"kit": row}, "workers": [], "decisions": []}
    text = format_status(status)
    assert (
        "kit: labels region=eu; each worker reserves 1 CPU(s), 1 accel; on nodes with zone=a; "
        "env API_TOKEN, LOG_LEVEL (values hidden)"
    ) in text
    assert SECRET not in text
    assert SECRET not in json.dumps(status)  # what `raybus status --json` prints
