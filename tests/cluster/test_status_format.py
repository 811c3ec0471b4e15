import time

import pytest

from cluster.cli import main
from cluster.cli.status import format_buses, format_status


def test_status_shows_pools_workers_and_recent_scaling_decisions() -> None:
    status = {
        "bus": "demo",
        "pools": {
            "kit": {
                "workers": 3,
                "queued": 12,
                "oldest_age_s": 0.75,
                "in_flight": 24,
                "breaker": "closed",
            }
        },
        "workers": [
            {
                "name": "raybus/demo/worker/kit/a",
                "pool": "kit",
                "status": "busy",
                "in_flight": 8,
                "node": "abcd1234",
            }
        ],
        "decisions": [
            {
                "pool": "kit",
                "current": 1,
                "desired": 1,
                "reason": "size matches load",
                "wall_time": time.time(),
            },
            {
                "pool": "kit",
                "current": 1,
                "desired": 3,
                "reason": "load 36 over 1 worker(s): scale up",
                "wall_time": time.time(),
            },
        ],
    }
    text = format_status(status)
    assert "kit                  3      12      0.75        24  closed" in text
    assert "raybus/demo/worker/kit/a" in text
    assert "1 -> 3   load 36 over 1 worker(s): scale up" in text
    assert "size matches load" not in text  # only changes are listed when there are some


def test_status_counts_the_bus_tasks_by_status_when_it_holds_any() -> None:
    status = {"bus": "demo", "pools": {}, "workers": [], "decisions": []}
    assert "tasks" not in format_status(status | {"tasks": {"working": 0, "completed": 0}})
    text = format_status(status | {"tasks": {"working": 2, "failed": 0, "completed": 5}})
    assert "tasks: 2 working, 5 completed" in text


def row(bus: str, **changes: object) -> dict[str, object]:
    return {
        "bus": bus,
        "ray_address": "10.0.0.1:6379",
        "backend": "kafka",
        "pools": 2,
        "workers": 5,
        "queued": 120,
        "oldest_age_s": 1.5,
        "in_flight": 64,
        "breakers": {"calc": "closed", "kit": "open"},
        "gateways": ["http://10.0.0.1:8765/mcp", "http://10.0.0.2:8765/mcp"],
    } | changes


def test_the_bus_list_is_one_aligned_row_per_bus_naming_tripped_breakers() -> None:
    table = format_buses([row("beta", breakers={"kit": "closed"}, gateways=[]), row("alpha")])
    assert table.splitlines() == [
        "bus    backend  pools  workers  queued  oldest s  in flight  breaker   gateway",
        "alpha  kafka        2        5     120      1.50         64  kit:open  "
        "http://10.0.0.1:8765/mcp, http://10.0.0.2:8765/mcp",
        "beta   kafka        2        5     120      1.50         64  closed    -",
    ]


def test_buses_on_several_clusters_show_which_ray_each_is_on() -> None:
    table = format_buses([row("alpha"), row("alpha", ray_address="127.0.0.1:6380")])
    assert table.splitlines()[0].split()[-2:] == ["ray", "gateway"]
    assert "127.0.0.1:6380" in table
    assert "10.0.0.1:6379" in table


def test_no_bus_is_one_line() -> None:
    assert format_buses([]) == "no bus is running"


@pytest.mark.parametrize("interval", ["0.1", "7200", "soon"])
def test_a_watch_interval_outside_its_bounds_is_refused(
    interval: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["status", "--watch", interval])
    assert exited.value.code == 2
    assert "argument --watch" in capsys.readouterr().err
