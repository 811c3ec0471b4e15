"""The region rule (actors/router/regions.py): routing never crosses a region boundary
that router.regions.failover does not open, and the worker's check agrees with it."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.router.regions import RefusalReason, RegionPolicy, RegionRefusal, placement_notes
from transports.envelope import Envelope
from transports.labels import labels_of, with_labels

REGIONS = ["eu", "us", "ap"]


@dataclass(frozen=True)
class Pool:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    min_workers: int = 1


@st.composite
def worlds(draw: st.DrawFn) -> tuple[RegionPolicy, list[str], set[str]]:
    """A policy over some pools (regioned or not), the candidates offering a name (in
    order), and which of them are available."""
    names = draw(st.lists(st.sampled_from([f"p{i}" for i in range(6)]), min_size=1, unique=True))
    regions = draw(
        st.lists(st.sampled_from([None, *REGIONS]), min_size=len(names), max_size=len(names))
    )
    pools = [Pool(name, {"region": r} if r else {}) for name, r in zip(names, regions, strict=True)]
    failover = {
        region: draw(st.lists(st.sampled_from([r for r in REGIONS if r != region]), unique=True))
        for region in draw(st.lists(st.sampled_from(REGIONS), unique=True))
    }
    policy = RegionPolicy(failover=failover, require=draw(st.booleans())).derived(pools)
    candidates = draw(st.permutations(names))
    available = set(draw(st.lists(st.sampled_from(names), unique=True)))
    return policy, list(candidates), available


# A loaded machine is no failure of the rule.
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.sampled_from([None, *REGIONS]))
def test_a_chosen_pool_is_always_one_the_worker_admits(
    world: tuple[RegionPolicy, list[str], set[str]], region: str | None
) -> None:
    policy, candidates, available = world
    chosen = policy.choose(candidates, region, available.__contains__, "score")
    if isinstance(chosen, str):
        assert chosen in candidates
        assert policy.permits(chosen, region)
        if region is not None:
            assert chosen in available
    else:
        assert chosen.code == 1010
        assert chosen.data()["region"] == region


# A loaded machine is no failure of the rule.
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds(), st.sampled_from(REGIONS))
def test_a_region_is_left_only_along_its_failover_list_and_in_its_order(
    world: tuple[RegionPolicy, list[str], set[str]], region: str
) -> None:
    policy, candidates, available = world
    chosen = policy.choose(candidates, region, available.__contains__, "score")
    order = [region, *policy.failover.get(region, [])]
    serving = [
        r for r in order if any(policy.pool_regions[p] == r and p in available for p in candidates)
    ]
    if not serving:
        assert isinstance(chosen, RegionRefusal)
        offered = any(policy.pool_regions[p] == region for p in candidates)
        expected = RefusalReason.UNAVAILABLE if offered else RefusalReason.NOT_OFFERED
        assert chosen.reason is expected
    else:
        assert isinstance(chosen, str)
        assert policy.pool_regions[chosen] == serving[0]  # the most preferred that can serve


# A loaded machine is no failure of the rule.
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_requests_without_a_region_keep_todays_owner_or_are_refused_when_required(
    world: tuple[RegionPolicy, list[str], set[str]],
) -> None:
    policy, candidates, available = world
    chosen = policy.choose(candidates, None, available.__contains__, "score")
    if policy.require:
        assert isinstance(chosen, RegionRefusal)
        assert chosen.reason is RefusalReason.NO_REGION
        return
    unregioned = [p for p in candidates if policy.pool_regions[p] is None]
    assert chosen == (unregioned[0] if unregioned else candidates[0])


def test_a_pool_without_the_region_label_never_serves_a_regioned_request() -> None:
    policy = RegionPolicy().derived([Pool("plain"), Pool("eu-pool", {"region": "eu"})])
    assert not policy.permits("plain", "eu")
    assert policy.permits("plain", None)
    refused = policy.choose(["plain"], "eu", lambda _: True, "score")
    assert isinstance(refused, RegionRefusal)
    assert refused.reason is RefusalReason.NOT_OFFERED
    assert refused.message == (
        "region refused: no pool in region 'eu' can serve score (none offers it); "
        "router.regions.failover allows no other region"
    )


def test_default_gives_unlabelled_requests_a_region() -> None:
    policy = RegionPolicy(default="eu")
    assert policy.region_of(Envelope()) == "eu"
    assert policy.region_of(with_labels(Envelope(), {"region": "us"})) == "us"


def test_labels_ride_the_envelope_and_survive_its_headers() -> None:
    envelope = with_labels(Envelope(attributes=(("task", "1"),)), {"region": "eu"})
    assert labels_of(envelope) == {"region": "eu"}
    assert labels_of(Envelope.from_headers(envelope.to_headers())) == {"region": "eu"}
    assert ("task", "1") in envelope.attributes
    assert labels_of(with_labels(envelope, {"region": "us"})) == {"region": "us"}


@dataclass(frozen=True)
class PlacedPool(Pool):
    label_selector: dict[str, str] = field(default_factory=dict)


def test_a_regioned_pool_whose_workers_may_run_anywhere_gets_a_placement_note() -> None:
    pools = [
        PlacedPool("eu-placed", {"region": "eu"}, label_selector={"region": "eu"}),
        PlacedPool("us-anywhere", {"region": "us"}),
        PlacedPool("plain"),
    ]
    assert placement_notes(RegionPolicy(), pools) == [
        "pools[1]: labels.region=us keeps calls on this pool, not this pool on us nodes;"
        " add label_selector: {region: us}"
    ]
    assert placement_notes(None, pools) == []
