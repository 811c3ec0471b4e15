"""The gateway's SSE event store: bounded, and scoped to one session per view."""

from __future__ import annotations

import pytest
from mcp.server.streamable_http import EventMessage
from mcp_types import JSONRPCNotification, JSONRPCResponse

from cluster.config import ConfigError, parse_config
from cluster.gateway.app import http_app
from cluster.gateway.event_store import BoundedEventStore
from cluster.gateway.server import Gateway
from tests.actors.fakes import FakeClock
from tests.cluster.gateway.fake_bus import fake_bus


def _response(n: int) -> JSONRPCResponse:
    return JSONRPCResponse(jsonrpc="2.0", id=n, result={"n": n})


def _progress(n: int) -> JSONRPCNotification:
    return JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params={"n": n})


async def _replayed(view: object, after: str) -> tuple[object, list[str]]:
    sent: list[EventMessage] = []

    async def send(message: EventMessage) -> None:
        sent.append(message)

    stream = await view.replay_events_after(after, send)  # type: ignore[attr-defined]
    return stream, [m.event_id or "" for m in sent]


async def test_a_session_replays_its_own_stream_and_never_another_sessions() -> None:
    store = BoundedEventStore()
    a, b = store.for_session("a"), store.for_session("b")
    # The SDK names a request's stream by the request id: "1" in both sessions.
    a_primed = await a.store_event("1", None)
    b_primed = await b.store_event("1", None)
    b_answer = await b.store_event("1", _response(1))
    a_answer = await a.store_event("1", _response(1))
    assert await _replayed(a, a_primed) == ("1", [a_answer])
    assert await _replayed(b, b_primed) == ("1", [b_answer])
    # Another session's event id is unknown here, whatever stream it names.
    assert await _replayed(a, b_primed) == (None, [])
    assert await _replayed(b, a_primed) == (None, [])


async def test_a_finished_stream_is_kept_for_a_while_then_dropped_and_an_open_one_stays() -> None:
    clock = FakeClock()
    store = BoundedEventStore(finished_kept_s=30, clock=clock)
    view = store.for_session("s")
    done_primed = await view.store_event("1", None)
    await view.store_event("1", _response(1))
    open_primed = await view.store_event("2", None)
    progress = await view.store_event("2", _progress(1))
    clock.advance(29)
    store.prune()
    assert (await _replayed(view, done_primed))[0] == "1"  # a reconnect still finds it
    clock.advance(2)
    store.prune()
    assert await _replayed(view, done_primed) == (None, [])
    assert await _replayed(view, open_primed) == ("2", [progress])  # still open: kept
    assert store.held == 2


async def test_the_count_bound_drops_the_oldest_events_first() -> None:
    store = BoundedEventStore(max_events=3)
    view = store.for_session("s")
    ids = [await view.store_event("_GET_stream", _progress(n)) for n in range(5)]
    assert store.held == 3
    assert await _replayed(view, ids[0]) == (None, [])
    assert await _replayed(view, ids[2]) == ("_GET_stream", ids[3:])


async def test_ids_of_dropped_streams_do_not_pile_up_in_the_store() -> None:
    clock = FakeClock()
    store = BoundedEventStore(finished_kept_s=1, clock=clock)
    view = store.for_session("s")
    for n in range(20_000):
        await view.store_event(str(n), _response(n))
        clock.advance(0.01)
    assert store.held <= 101
    assert len(store._order) <= 2 * store.held + 1024


def test_the_gateway_keeps_finished_streams_for_its_configured_resume_window() -> None:
    config = parse_config(
        {"name": "w", "pools": [{"name": "p", "tools": "x:y"}], "gateway": {"resume_window_s": 4}}
    )
    gateway = Gateway(fake_bus())
    http_app(gateway, config, 8765)
    store = gateway.server.session_manager.event_store
    assert isinstance(store, BoundedEventStore)
    assert store.finished_kept_s == 4
    with pytest.raises(ConfigError, match="resume_window_s"):
        parse_config({"name": "w", "pools": [], "gateway": {"resume_window_s": 0}})
