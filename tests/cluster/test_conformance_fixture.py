"""Our conformance fixture mirrors the SDK's own fixture server, name for name.

The suite probes fixtures by name; the SDK's ``everything-server`` is the reference the
suite is written against, so whatever it lists, ours lists too (and nothing else).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from cluster.examples.conformance import server as ours
from tests.conformance.everything import PACKAGE, everything_server_dir


@pytest.fixture(scope="module")
def reference() -> Iterator[Any]:
    sys.path.insert(0, str(everything_server_dir()))
    try:
        yield importlib.import_module(f"{PACKAGE}.server").mcp
    finally:
        sys.path.remove(str(everything_server_dir()))


async def names(server: Any) -> dict[str, set[str]]:
    return {
        "tools": {t.name for t in await server.list_tools()},
        "prompts": {p.name for p in await server.list_prompts()},
        "resources": {str(r.uri) for r in await server.list_resources()},
        "templates": {t.uri_template for t in await server.list_resource_templates()},
    }


async def test_our_fixture_lists_exactly_what_the_sdk_fixture_server_lists(
    reference: Any,
) -> None:
    theirs = await names(reference)
    assert all(theirs.values())  # the reference really was read
    assert await names(ours) == theirs
