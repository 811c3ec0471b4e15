"""``map:`` callables for the trigger tests (named by import path, as a user would)."""

from __future__ import annotations

import asyncio
from typing import Any

from actors.triggers.record import TriggerRecord

NOT_CALLABLE = 42


def order_args(record: TriggerRecord) -> dict[str, Any] | None:
    """Skip test orders; otherwise the id and the shop header."""
    if record.value.get("test"):
        return None
    return {"id": record.value["id"], "shop": record.headers["shop"]}


async def async_args(record: TriggerRecord) -> dict[str, Any]:
    await asyncio.sleep(0)
    return {"key": record.key}


def not_a_dict(record: TriggerRecord) -> Any:
    return ["id"]
