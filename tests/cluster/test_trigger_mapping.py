"""A trigger's record -> arguments function: the template, or a ``map:`` callable."""

from __future__ import annotations

import json
from typing import Any

import pytest

from actors.triggers.record import TriggerRecord
from cluster.triggers.ports import TriggerStartFailed, mapper_for
from cluster.triggers.settings import TriggerConfig

RECORD = TriggerRecord(
    raw_key=b"o-1",
    raw_value=json.dumps({"id": 1}).encode(),
    raw_headers=(("shop", b"berlin"),),
)


def trigger(**extra: Any) -> TriggerConfig:
    data = {"name": "t", "source": {"kafka": {"topic": "orders"}}, "tool": "echo", **extra}
    return TriggerConfig.model_validate(data)


async def test_the_template_renders_each_record() -> None:
    mapper = mapper_for(trigger(arguments={"text": "${value.id} at ${headers.shop}"}))
    assert await mapper(RECORD) == {"text": "1 at berlin"}


async def test_a_sync_callable_maps_records_and_none_skips_one() -> None:
    mapper = mapper_for(trigger(map="tests.cluster.trigger_maps:order_args"))
    assert await mapper(RECORD) == {"id": 1, "shop": "berlin"}
    test_order = TriggerRecord(raw_key=None, raw_value=b'{"id": 2, "test": true}')
    assert await mapper(test_order) is None


async def test_an_async_callable_is_awaited() -> None:
    mapper = mapper_for(trigger(map="tests.cluster.trigger_maps:async_args"))
    assert await mapper(RECORD) == {"key": "o-1"}


async def test_a_callable_returning_something_else_fails_the_record() -> None:
    mapper = mapper_for(trigger(map="tests.cluster.trigger_maps:not_a_dict"))
    with pytest.raises(TypeError, match="map returned list, not a dict of arguments or None"):
        await mapper(RECORD)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("tests.cluster.no_such_module:f", "map: cannot import 'tests.cluster.no_such_module:f'"),
        ("tests.cluster.trigger_maps:missing", "map: cannot import"),
        ("tests.cluster.trigger_maps:NOT_CALLABLE", "is not callable"),
    ],
)
def test_a_map_that_does_not_import_stops_the_trigger_at_start(path: str, reason: str) -> None:
    with pytest.raises(TriggerStartFailed, match=reason):
        mapper_for(trigger(map=path))
