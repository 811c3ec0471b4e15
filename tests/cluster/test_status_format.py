import time

from cluster.cli.status import format_status


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
