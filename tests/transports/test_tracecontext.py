"""W3C trace context: what is accepted, what is ignored, and that nothing raises."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transports.tracecontext import MAX_TRACESTATE_CHARS, TraceContext, parse_tracestate

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{SPAN_ID}-01"


def test_a_valid_traceparent_is_read_and_written_back_unchanged() -> None:
    context = TraceContext.parse(VALID, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    assert context == TraceContext(TRACE_ID, SPAN_ID, 1, "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    assert context.traceparent == VALID
    assert context.sampled
    unsampled = TraceContext.parse(VALID[:-2] + "00")
    assert unsampled is not None
    assert not unsampled.sampled


@pytest.mark.parametrize(
    ("label", "traceparent"),
    [
        ("uppercase hex", VALID.upper()),
        ("an all-zero trace id", f"00-{'0' * 32}-{SPAN_ID}-01"),
        ("an all-zero parent id", f"00-{TRACE_ID}-{'0' * 16}-01"),
        ("version ff", f"ff-{TRACE_ID}-{SPAN_ID}-01"),
        ("version 00 with more fields", f"{VALID}-extra"),
        ("a short trace id", f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01"),
        ("a long parent id", f"00-{TRACE_ID}-{SPAN_ID}0-01"),
        ("underscores for dashes", VALID.replace("-", "_")),
        ("a non-hex digit", VALID.replace("4b", "4g", 1)),
        ("one-digit flags", VALID[:-1]),
        ("spaces around it", f" {VALID} "),
        ("empty", ""),
        ("a later version without its separator", f"01-{TRACE_ID}-{SPAN_ID}-01x"),
    ],
)
def test_an_invalid_traceparent_is_ignored(label: str, traceparent: str) -> None:
    assert TraceContext.parse(traceparent, "a=1") is None, label


def test_values_that_are_not_strings_count_as_absent() -> None:
    assert TraceContext.parse(None) is None
    assert TraceContext.parse(12) is None
    assert TraceContext.from_carrier({"traceparent": ["x"]}) is None
    assert TraceContext.from_carrier({"tracestate": "a=1"}) is None
    assert TraceContext.from_carrier(None) is None


def test_a_later_version_is_read_by_its_first_fields_and_written_as_version_00() -> None:
    context = TraceContext.parse(f"cc-{TRACE_ID}-{SPAN_ID}-01-what-the-future-adds")
    assert context is not None
    assert context.traceparent == VALID
    assert TraceContext.parse(f"cc-{TRACE_ID}-{SPAN_ID}-01") is not None


@pytest.mark.parametrize(
    "tracestate",
    [
        "a=1,b=2",
        "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7",  # spaces after commas
        "a=1,,b=2",  # empty members are allowed
        "tenant1@system=x",
        "0tenant@sys=x",  # a tenant may start with a digit
        "key-with_*/chars=value with spaces",
    ],
)
def test_a_tracestate_that_fits_the_grammar_is_kept(tracestate: str) -> None:
    context = TraceContext.parse(VALID, tracestate)
    assert context is not None
    assert context.tracestate == tracestate


@pytest.mark.parametrize(
    ("label", "tracestate"),
    [
        ("a member without =", "a=1,b"),
        ("an uppercase key", "A=1"),
        ("a key starting with a digit", "1a=1"),
        ("a duplicate key", "a=1,a=2"),
        ("a value with an =", "a=1=2"),
        ("an empty value", "a="),
        ("33 members", ",".join(f"k{i}=v" for i in range(33))),
        ("too long", "a=" + "x" * MAX_TRACESTATE_CHARS),
        ("a control character", "a=1\x00"),
        ("a system starting with a digit", "t@1s=x"),
        ("only commas", ",,"),
        ("not a string", 5),
    ],
)
def test_a_tracestate_that_breaks_the_grammar_is_dropped_alone(
    label: str, tracestate: object
) -> None:
    context = TraceContext.parse(VALID, tracestate)
    assert context is not None, label
    assert context.tracestate is None, label


def test_a_tracestate_without_a_valid_traceparent_is_never_read() -> None:
    assert TraceContext.parse("garbage", "a=1") is None


@given(
    st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
    st.integers(0, 255),
)
def test_every_valid_context_round_trips(trace_id: str, span_id: str, flags: int) -> None:
    written = f"00-{trace_id}-{span_id}-{flags:02x}"
    context = TraceContext.parse(written)
    if set(trace_id) == {"0"} or set(span_id) == {"0"}:
        assert context is None
    else:
        assert context is not None
        assert context.traceparent == written


@given(st.text(max_size=300), st.one_of(st.none(), st.text(max_size=600)))
def test_no_input_raises(traceparent: str, tracestate: str | None) -> None:
    context = TraceContext.parse(traceparent, tracestate)
    if context is not None:
        assert TraceContext.parse(context.traceparent) is not None
    parse_tracestate(tracestate)


def test_inputs_past_the_limits_are_refused_before_they_are_scanned() -> None:
    huge = VALID + "-" + "a" * 1_000_000
    assert TraceContext.parse(huge) is None
    assert parse_tracestate("a=" + "b" * 1_000_000) is None
    assert parse_tracestate(",".join(["a=1"] * 100_000)) is None
