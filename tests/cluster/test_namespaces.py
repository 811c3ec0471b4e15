"""Namespaces and tool filters in the configuration, clashes told before start; no Ray."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from actors.discovery.catalog import Collision, Kind
from cluster.cli.status import format_status
from cluster.config import ConfigError, parse_config
from cluster.namespaces import first_collision, pool_exposure, static_collisions

FUNCTIONS = "cluster.examples.functions"  # hypotenuse, word_count


def config(pools: list[dict[str, Any]], **extra: Any) -> Any:
    return parse_config({"name": "ns", "pools": pools, **extra})


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_a_pools_exposure_takes_its_namespace_filters_and_the_buses_separator() -> None:
    pool = {"name": "geo", "tools": FUNCTIONS, "namespace": "geo", "exclude": ["word_*"]}
    bus = config([pool], namespace_separator="__")
    exposure = pool_exposure(bus, bus.pools[0])
    assert exposure.public_name("hypotenuse") == "geo__hypotenuse"
    assert not exposure.shows_tool("word_count")


def test_bad_namespaces_separators_and_patterns_name_their_field() -> None:
    found = problems(
        {
            "namespace_separator": ":",
            "pools": [
                {"name": "a", "tools": FUNCTIONS, "namespace": "geo tools"},
                {"name": "b", "tools": FUNCTIONS, "include": ["hypotenuse", " "]},
            ],
        }
    )
    assert found == [
        "pools[0].namespace: namespace 'geo tools' must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        "pools[1].include: tool names and patterns must not be empty",
        "namespace_separator: must be 1 to 4 of the characters _ . - (got ':')",
    ]


def test_the_same_tools_in_two_pools_clash_unless_namespaced_or_filtered() -> None:
    tools = {"a": ["hypotenuse", "word_count"], "b": ["hypotenuse", "word_count"]}
    same = config([{"name": "a", "tools": FUNCTIONS}, {"name": "b", "tools": FUNCTIONS}])
    clashes = static_collisions(same, tools)
    assert [(pool, str(clash)) for pool, clash in clashes] == [
        (
            "b",
            "tool 'hypotenuse' is offered by pools 'a' and 'b': "
            "give one of them a namespace, or exclude the tool from one",
        ),
        (
            "b",
            "tool 'word_count' is offered by pools 'a' and 'b': "
            "give one of them a namespace, or exclude the tool from one",
        ),
    ]
    apart = config(
        [{"name": "a", "tools": FUNCTIONS}, {"name": "b", "tools": FUNCTIONS, "namespace": "b"}]
    )
    assert static_collisions(apart, tools) == []
    split = config(
        [
            {"name": "a", "tools": FUNCTIONS, "include": ["hyp*"]},
            {"name": "b", "tools": FUNCTIONS, "exclude": ["hypotenuse"]},
        ]
    )
    assert static_collisions(split, tools) == []


def test_pools_whose_tools_are_unknown_before_start_are_not_judged() -> None:
    both = config([{"name": "a", "tools": FUNCTIONS}, {"name": "b", "tools": FUNCTIONS}])
    assert static_collisions(both, {"a": ["hypotenuse"]}) == []


def test_a_clash_at_start_names_the_pools_in_configuration_order_whoever_registered_first() -> None:
    registered = [
        Collision(Kind.RESOURCE, "geo://earth", "b", "a"),  # URIs are no reason to refuse
        Collision(Kind.PROMPT, "explain", "b", "a"),
        Collision(Kind.TOOL, "word_count", "b", "a"),
        Collision(Kind.TOOL, "area", "c", "b"),
    ]
    clash = first_collision(registered, ["a", "b", "c"])
    assert clash is not None
    assert (clash.kind, clash.name, clash.pools) == (Kind.TOOL, "area", ("b", "c"))
    assert first_collision(registered[:2], ["a", "b"]) is not None  # prompts clash too
    assert first_collision(registered[:1], ["a", "b"]) is None


def test_config_check_names_a_clash_between_two_function_pools(tmp_path: Path) -> None:
    path = tmp_path / "bus.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: clash
            pools:
              - name: geometry
                tools: "{FUNCTIONS}"
                exclude: [word_count]
              - name: shapes
                tools: "{FUNCTIONS}"
              - name: maps
                tools: "{FUNCTIONS}"
                namespace: maps
            """
        )
    )
    completed = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr
    assert completed.stdout.splitlines() == [
        "pools[1]: tool 'hypotenuse' is offered by pools 'geometry' and 'shapes': "
        "give one of them a namespace, or exclude the tool from one"
    ]


def test_status_shows_a_clash_and_who_keeps_the_name() -> None:
    status = {
        "bus": "demo",
        "pools": {},
        "workers": [],
        "decisions": [],
        "collisions": [{"kind": "tool", "name": "area", "owner": "a", "other": "b"}],
    }
    assert "  collision: tool 'area' is offered by pools a and b; a keeps it" in (
        format_status(status).splitlines()
    )


def test_the_same_tools_in_pools_of_different_regions_are_replicas_not_a_clash() -> None:
    tools = {"a": ["hypotenuse"], "b": ["hypotenuse"], "c": ["hypotenuse"]}
    regional = parse_config(
        {
            "pools": [
                {"name": "a", "tools": FUNCTIONS, "labels": {"region": "eu"}},
                {"name": "b", "tools": FUNCTIONS, "labels": {"region": "us"}},
                {"name": "c", "tools": FUNCTIONS, "labels": {"region": "eu"}},
            ],
            "router": {"regions": {}},
        }
    )
    # Only the second eu pool clashes (with the first); us is a replica.
    assert [(pool, clash.pools) for pool, clash in static_collisions(regional, tools)] == [
        ("c", ("a", "c"))
    ]
