"""The session fixtures of ``tests/services_plugin.py`` that are not brokers."""

from __future__ import annotations

import re

import pytest

from tests.services_plugin import RAY_NAMESPACE


def test_unique_name_is_a_fresh_name_valid_for_topics_and_queues(unique_name: str) -> None:
    assert re.fullmatch(r"t-[0-9a-f]{12}", unique_name)


def test_unique_name_differs_between_tests(unique_name: str) -> None:
    # Paired with the test above: a fixture, not a constant.
    assert unique_name != "t-000000000000"


@pytest.mark.ray
def test_ray_session_gives_a_local_ray_in_the_tests_namespace(ray_session: None) -> None:
    import ray

    @ray.remote
    def double(x: int) -> int:
        return 2 * x

    assert ray.is_initialized()
    assert ray.get_runtime_context().namespace == RAY_NAMESPACE
    assert ray.get(double.remote(21), timeout=60) == 42
