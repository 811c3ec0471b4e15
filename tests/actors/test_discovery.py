from actors.discovery.catalog import Catalog, Kind
from actors.discovery.registry import DiscoveryRegistry, Heartbeat, ServerStatus
from tests.actors.fakes import FakeClock

TOOLS_A = Catalog.of(tools=[{"name": "a"}])
TOOLS_AB = Catalog.of(tools=[{"name": "a"}, {"name": "b"}])


def beat(
    server: str,
    catalog: Catalog,
    *,
    pool: str = "p",
    send_catalog: bool = True,
    status: ServerStatus = ServerStatus.ONLINE,
) -> Heartbeat:
    return Heartbeat(
        server,
        pool,
        f"actor-{server}",
        status,
        0,
        catalog.digest,
        4,
        catalog if send_catalog else None,
    )


def test_a_heartbeat_without_a_known_catalog_asks_for_it() -> None:
    registry = DiscoveryRegistry(clock=FakeClock())
    assert registry.heartbeat(beat("s1", TOOLS_A, send_catalog=False))
    assert not registry.heartbeat(beat("s1", TOOLS_A))
    assert not registry.heartbeat(beat("s2", TOOLS_A, send_catalog=False))  # digest known now


def test_servers_that_stop_heartbeating_are_evicted_after_the_ttl() -> None:
    clock = FakeClock()
    registry = DiscoveryRegistry(ttl_s=5, clock=clock)
    registry.heartbeat(beat("s1", TOOLS_A))
    registry.heartbeat(beat("s2", TOOLS_A))
    clock.advance(3)
    registry.heartbeat(beat("s2", TOOLS_A))
    clock.advance(3)
    assert registry.evict_stale() == ["s1"]
    assert [w.server_id for w in registry.live_workers()] == ["s2"]


def test_only_membership_status_and_catalog_changes_bump_the_version() -> None:
    registry = DiscoveryRegistry(clock=FakeClock())
    registry.heartbeat(beat("s1", TOOLS_A))
    version = registry.version
    registry.heartbeat(beat("s1", TOOLS_A))
    assert registry.version == version
    registry.heartbeat(beat("s1", TOOLS_A, status=ServerStatus.DRAINING))
    assert registry.version == version + 1


def test_a_registry_started_anew_counts_versions_in_an_epoch_of_its_own() -> None:
    # A restarted discovery counts from zero again: its snapshots are told apart by epoch.
    first, again = DiscoveryRegistry(clock=FakeClock()), DiscoveryRegistry(clock=FakeClock())
    first.heartbeat(beat("s1", TOOLS_A))
    again.heartbeat(beat("s1", TOOLS_A))
    assert first.snapshot().version == again.snapshot().version
    assert first.snapshot().epoch != again.snapshot().epoch
    first.heartbeat(beat("s2", TOOLS_A))
    assert first.snapshot().epoch == first.epoch  # one registry keeps its epoch


def test_list_changed_events_name_the_lists_that_changed() -> None:
    registry = DiscoveryRegistry(clock=FakeClock())
    registry.heartbeat(beat("s1", TOOLS_A))
    assert registry.changed_kinds() == {Kind.TOOL, Kind.PROMPT, Kind.RESOURCE}
    registry.heartbeat(beat("s1", TOOLS_A))
    assert registry.changed_kinds() == set()
    registry.heartbeat(beat("s1", TOOLS_AB))
    assert registry.changed_kinds() == {Kind.TOOL}


def test_the_index_routes_names_to_the_first_pool_that_offered_them() -> None:
    registry = DiscoveryRegistry(clock=FakeClock())
    registry.heartbeat(beat("s1", TOOLS_A, pool="first"))
    registry.heartbeat(beat("s2", TOOLS_AB, pool="second"))
    snapshot = registry.snapshot()
    assert snapshot.pool_for(Kind.TOOL, "a") == "first"
    assert snapshot.pool_for(Kind.TOOL, "b") == "second"
    assert snapshot.pool_for(Kind.TOOL, "c") is None


def test_heartbeats_round_trip_as_json_records() -> None:
    with_catalog = Heartbeat(
        "s1", "p", "actor-s1", ServerStatus.BUSY, 3, TOOLS_AB.digest, 8, TOOLS_AB, "n1", ("tool",)
    )
    assert Heartbeat.from_json(with_catalog.to_json()) == with_catalog
    without = beat("s2", TOOLS_A, send_catalog=False)
    assert Heartbeat.from_json(without.to_json()) == without
