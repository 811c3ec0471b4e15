"""Tool arguments checked against the tool's inputSchema, with bounded cost.

JSON Schema 2020-12 (or the draft the schema names). ``$ref`` may only point inside the
schema: any remote reference fails instead of being fetched. Schemas over a size bound
are refused rather than compiled, and validators are cached per schema digest.

A ``pattern`` comes from the server, but the string it runs on comes from the client, and
JSON Schema patterns are unanchored: jsonschema's ``re.search`` tries a pattern such as
``[a-z.]+@x`` from every position of a long word, at a cost of the square of its length
(32 KB took 2.4 s on the event loop; one 1 MB argument would freeze the gateway for
everyone). Here ``pattern`` runs on the ``regex`` engine (``re``'s syntax) with one time
budget for all of a call's pattern checks; a string that would cost more is refused as
too costly to check (fail closed), naming the pattern. The same holds for the property
names of client objects that ``patternProperties`` and ``additionalProperties`` match
against patterns. (``unevaluatedProperties`` beside ``patternProperties`` still runs
jsonschema's own ``re.search`` on property names.)
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

import regex
from jsonschema import exceptions as schema_errors
from jsonschema import validators
from referencing import Registry
from referencing.exceptions import NoSuchResource, Unresolvable

__all__ = ["SchemaRefused", "argument_errors"]

MAX_SCHEMA_BYTES = 256 * 1024
MAX_REPORTED_ERRORS = 5
# All pattern checks of one call together: far above what any sane pattern costs on a
# normal argument (microseconds), and still a short stall of the event loop at worst.
PATTERN_BUDGET_S = 0.2
_PATTERN_DEADLINE: ContextVar[float] = ContextVar("raybus_pattern_deadline", default=math.inf)


class SchemaRefused(ValueError):
    """The schema itself is unusable (too large, invalid, remote references)."""


def _no_remote(uri: str) -> Any:
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


_REGISTRY: Registry[Any] = Registry(retrieve=_no_remote)  # type: ignore[call-arg]


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    try:
        return regex.compile(pattern)
    except regex.error as exc:
        raise SchemaRefused(f"pattern {pattern!r} cannot be compiled: {exc}") from None


class _TooCostly(Exception):
    """A search would overrun the call's pattern budget."""


def _search(pattern: str, text: str) -> bool:
    """``re.search`` semantics on the ``regex`` engine, within the call's budget.

    Raises:
        _TooCostly: the budget is spent (or would be by this search).
    """
    remaining = _PATTERN_DEADLINE.get() - time.monotonic()
    if remaining <= 0:
        raise _TooCostly
    try:
        return _compiled(pattern).search(text, timeout=remaining) is not None
    except TimeoutError:
        raise _TooCostly from None


def _too_costly(what: str, text: str, pattern: str) -> schema_errors.ValidationError:
    return schema_errors.ValidationError(
        f"a {what} of {len(text)} characters is too costly to check against pattern {pattern!r}"
    )


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Any
) -> Iterator[schema_errors.ValidationError]:
    """The ``pattern`` keyword, within the call's time budget (see the module docstring)."""
    if not validator.is_type(instance, "string"):
        return
    try:
        found = _search(pattern, instance)
    except _TooCostly:
        yield _too_costly("string", instance, pattern)
        return
    if not found:
        shown = repr(instance) if len(instance) <= 64 else f"{instance[:64]!r}... ({len(instance)})"
        yield schema_errors.ValidationError(f"{shown} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[schema_errors.ValidationError]:
    """``patternProperties`` as jsonschema has it, its searches on client keys bounded."""
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            try:
                matches = _search(pattern, key)
            except _TooCostly:
                yield _too_costly("property name", key, pattern)
                return
            if matches:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[schema_errors.ValidationError]:
    """``additionalProperties`` as jsonschema has it, its pattern searches bounded."""
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = []
    for key in instance:
        if key in properties:
            continue
        try:
            if any(_search(pattern, key) for pattern in patterns):
                continue
        except _TooCostly:
            yield _too_costly("property name", key, "|".join(patterns))
            return
        extras.append(key)
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif additional is False and extras:
        shown = ", ".join(repr(extra) for extra in sorted(extras))
        if patterns:
            listed = ", ".join(repr(pattern) for pattern in sorted(patterns))
            yield schema_errors.ValidationError(
                f"{shown} do not match any of the regexes: {listed}"
            )
        else:
            yield schema_errors.ValidationError(
                f"Additional properties are not allowed ({shown} unexpected)"
            )


@lru_cache(maxsize=1024)
def _validator(digest: str, schema_text: str) -> Any:
    schema = json.loads(schema_text)
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except schema_errors.SchemaError as exc:
        raise SchemaRefused(f"inputSchema is invalid: {exc.message}") from None
    bounded = validators.extend(
        cls,
        {
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
        },
    )
    return bounded(schema, registry=_REGISTRY)


# The catalog hands out the same schema object call after call: remember its validator
# by identity (holding the schema, so its id is not reused) and skip serialising and
# hashing it on every call. Bounded like the digest cache; oldest forgotten first.
_BY_IDENTITY: dict[int, tuple[dict[str, Any], Any]] = {}
_MAX_BY_IDENTITY = 1024


def _validator_for(schema: dict[str, Any]) -> Any:
    known = _BY_IDENTITY.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    if len(text) > MAX_SCHEMA_BYTES:
        raise SchemaRefused(f"inputSchema is over {MAX_SCHEMA_BYTES} bytes")
    validator = _validator(hashlib.sha256(text.encode()).hexdigest(), text)
    if len(_BY_IDENTITY) >= _MAX_BY_IDENTITY:
        del _BY_IDENTITY[next(iter(_BY_IDENTITY))]
    _BY_IDENTITY[id(schema)] = (schema, validator)
    return validator


def argument_errors(schema: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    """Human-readable problems with ``arguments`` (empty when valid).

    The schema must not be changed in place after its first use (catalogs are replaced,
    not edited).

    Raises:
        SchemaRefused: the schema is too large, invalid, or refers to a remote document.
    """
    validator = _validator_for(schema)
    problems = []
    budget = _PATTERN_DEADLINE.set(time.monotonic() + PATTERN_BUDGET_S)
    try:
        for error in validator.iter_errors(arguments):
            where = "/".join(str(p) for p in error.absolute_path) or "(arguments)"
            problems.append(f"{where}: {error.message}")
            if len(problems) >= MAX_REPORTED_ERRORS:
                break
    except Unresolvable as exc:
        raise SchemaRefused(f"inputSchema refers to a document not fetched: {exc}") from None
    finally:
        _PATTERN_DEADLINE.reset(budget)
    return problems
