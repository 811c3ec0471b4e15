"""A tool schema's ``pattern`` runs on client strings: bounded time, same answers as ``re``."""

from __future__ import annotations

import re
import time

import pytest

from cluster.gateway.policy.schema_check import argument_errors

# Generous for a loaded 2-core machine: the budget for all of a call's patterns is 0.2 s.
BOUND_S = 5.0
UNANCHORED_EMAIL = r"[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}"


def schema_with(pattern: str) -> dict[str, object]:
    return {
        "type": "object",
        "properties": {
            "text": {"type": "string", "pattern": pattern},
            "many": {"type": "array", "items": {"type": "string", "pattern": pattern}},
        },
    }


def test_an_unanchored_pattern_on_a_256_kb_word_is_checked_in_bounded_time() -> None:
    # With re.search it started at every position: 32 KB took 2.4 s, this takes minutes.
    started = time.perf_counter()
    [problem] = argument_errors(schema_with(UNANCHORED_EMAIL), {"text": "a" * 256 * 1024})
    assert time.perf_counter() - started < BOUND_S
    assert problem.startswith("text: 'aaaa")
    assert problem.endswith(f"... ({256 * 1024}) does not match {UNANCHORED_EMAIL!r}")


def test_a_pattern_too_costly_for_a_string_refuses_it_within_the_calls_budget() -> None:
    # Exponential backtracking: with re one such string took about a minute.
    arguments = {"many": ["a" * 40 + "b"] * 20}
    started = time.perf_counter()
    problems = argument_errors(schema_with(r"^(a|aa)+$"), arguments)
    assert time.perf_counter() - started < BOUND_S
    assert problems  # fail closed: a string not checked is not accepted
    assert all("too costly to check against pattern '^(a|aa)+$'" in p for p in problems)


@pytest.mark.parametrize(
    ("pattern", "text"),
    [
        (UNANCHORED_EMAIL, "write to bob@example.org today"),
        (UNANCHORED_EMAIL, "no address here"),
        (r"^\d{3}-\d{4}$", "555-0100"),
        (r"^\d{3}-\d{4}$", "555-01000"),
        (r"(?i)^ab+c$", "ABBBC"),
        (r"^[^/]+\.txt$", "notes.txt"),
        (r"^[^/]+\.txt$", "dir/notes.txt"),
    ],
)
def test_patterns_accept_exactly_what_re_search_accepts(pattern: str, text: str) -> None:
    errors = argument_errors(schema_with(pattern), {"text": text})
    assert (errors == []) == (re.search(pattern, text) is not None)


def keyed_schema(pattern: str, additional: object = False) -> dict[str, object]:
    return {
        "type": "object",
        "properties": {
            "labels": {
                "type": "object",
                "patternProperties": {pattern: {"type": "string"}},
                "additionalProperties": additional,
            }
        },
    }


@pytest.mark.parametrize("additional", [False, {"type": "integer"}])
def test_pattern_properties_on_a_256_kb_property_name_are_checked_in_bounded_time(
    additional: object,
) -> None:
    # jsonschema's re.search on property names (patternProperties and the search
    # additionalProperties makes) cost the square of the name: 16 KB took 0.73 s.
    name = "a" * 256 * 1024
    started = time.perf_counter()
    problems = argument_errors(keyed_schema(UNANCHORED_EMAIL, additional), {"labels": {name: "x"}})
    assert time.perf_counter() - started < BOUND_S
    assert len(problems) == 1  # not matched: an additional property, refused or not an integer


def test_a_pattern_too_costly_for_property_names_refuses_them_within_the_calls_budget() -> None:
    labels = {"a" * 40 + "b" * (i + 1): "x" for i in range(20)}
    started = time.perf_counter()
    problems = argument_errors(keyed_schema(r"^(a|aa)+$"), {"labels": labels})
    assert time.perf_counter() - started < BOUND_S
    assert problems  # fail closed: a name not checked is not accepted
    assert all("too costly to check against pattern '^(a|aa)+$'" in p for p in problems)


@pytest.mark.parametrize(
    ("labels", "valid"),
    [
        ({"bob@example.org": "x"}, True),
        ({"bob@example.org": 1}, False),  # matched: its value must be a string
        ({"plain": "x"}, False),  # not matched, and additional properties are refused
        ({}, True),
    ],
)
def test_pattern_properties_decide_as_jsonschema_does(
    labels: dict[str, object], valid: bool
) -> None:
    assert (argument_errors(keyed_schema(UNANCHORED_EMAIL), {"labels": labels}) == []) == valid


def test_additional_properties_beside_patterns_are_checked_against_their_own_schema() -> None:
    schema = keyed_schema(r"^x-", {"type": "integer"})
    assert argument_errors(schema, {"labels": {"x-a": "s", "count": 3}}) == []
    [problem] = argument_errors(schema, {"labels": {"x-a": "s", "count": "three"}})
    assert problem.startswith("labels/count: ")
