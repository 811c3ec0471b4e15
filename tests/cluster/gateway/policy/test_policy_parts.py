import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.gateway.policy.ratelimit import RateLimiter
from cluster.gateway.policy.redaction import luhn_valid, redact, redact_text
from cluster.gateway.policy.schema_check import MAX_SCHEMA_BYTES, SchemaRefused, argument_errors
from cluster.gateway.policy.tokens import TokenTable, hash_token
from tests.actors.fakes import FakeClock


def test_tokens_are_matched_by_hash_only() -> None:
    table = TokenTable({hash_token("s3cret"): "alice"})
    assert table.principal_for("s3cret") == "alice"
    assert table.principal_for("S3cret") is None
    assert table.principal_for(hash_token("s3cret")) is None  # the hash is not a token


def test_a_bucket_refuses_past_its_burst_and_refills_at_its_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter((2.0, 2), {}, clock=clock)
    assert limiter.check("a", None) == 0
    assert limiter.check("a", None) == 0
    assert limiter.check("a", None) == pytest.approx(0.5)
    clock.advance(0.5)
    assert limiter.check("a", None) == 0


def test_one_principal_exhausting_its_bucket_does_not_slow_another() -> None:
    limiter = RateLimiter((1.0, 1), {}, clock=FakeClock())
    assert limiter.check("a", None) == 0
    assert limiter.check("a", None) > 0
    assert limiter.check("b", None) == 0


def test_a_refused_call_spends_no_token_from_the_other_bucket() -> None:
    clock = FakeClock()
    limiter = RateLimiter((10.0, 2), {"slow": (1.0, 1)}, clock=clock)
    assert limiter.check("a", "slow") == 0
    assert limiter.check("a", "slow") > 0  # per-tool bucket empty
    assert limiter.check("a", "other") == 0  # the per-principal token was refunded


def test_buckets_are_capped() -> None:
    limiter = RateLimiter((1.0, 1), {}, clock=FakeClock(), max_buckets=10)
    for i in range(100):
        limiter.check(f"p{i}", None)
    assert len(limiter._buckets) <= 10


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to bob@example.org", "email"),
        ("call +1 415 555 0100", "phone"),
        ("card 4111-1111-1111-1111", "card"),
        ("ssn 078-05-1120", "national-id"),
        ("Authorization: Bearer abcdefghijklmnop", "secret"),
        ("key sk-ABCDEFGHIJKLMNOPQRSTUV", "secret"),
        ("aws AKIAABCDEFGHIJKLMNOP", "secret"),
        ("token ghp_abcdefghijklmnopqrstuvwxyz0123", "secret"),
    ],
)
def test_each_kind_of_pii_is_redacted(text: str, kind: str) -> None:
    assert f"[REDACTED:{kind}]" in redact_text(text)


def test_numbers_that_fail_luhn_are_not_called_cards() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert "[REDACTED:card]" not in redact_text("order 4111111111111112")


def test_redaction_walks_json_values() -> None:
    value = {"to": ["a@b.co", {"cc": "c@d.io"}], "n": 3, "ok": True}
    assert redact(value) == {
        "to": ["[REDACTED:email]", {"cc": "[REDACTED:email]"}],
        "n": 3,
        "ok": True,
    }


@given(st.text(max_size=200))
def test_redaction_never_fails_and_is_idempotent(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once


SCHEMA = {"type": "object", "properties": {"a": {"type": "number"}}, "required": ["a"]}


def test_valid_arguments_pass_and_invalid_ones_are_described() -> None:
    assert argument_errors(SCHEMA, {"a": 1}) == []
    assert argument_errors(SCHEMA, {"a": "x"}) == ["a: 'x' is not of type 'number'"]
    assert argument_errors(SCHEMA, {}) == ["(arguments): 'a' is a required property"]


def test_remote_references_are_never_fetched() -> None:
    with pytest.raises(SchemaRefused):
        argument_errors({"$ref": "https://example.com/schema.json"}, {})


def test_local_references_work() -> None:
    schema = {
        "$defs": {"n": {"type": "number"}},
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/n"}},
    }
    assert argument_errors(schema, {"a": "x"}) != []


def test_huge_schemas_are_refused_before_compiling() -> None:
    schema = {"type": "object", "description": "x" * (MAX_SCHEMA_BYTES + 1)}
    with pytest.raises(SchemaRefused):
        argument_errors(schema, {})


def test_invalid_schemas_are_refused() -> None:
    with pytest.raises(SchemaRefused):
        argument_errors({"type": 12}, {})
