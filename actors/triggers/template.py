"""A trigger's argument template: ``${path}`` references into a record's view.

::

    arguments:
      order_id: "${value.id}"                          # exactly one reference: the JSON value
      note: "order ${value.id} from ${headers.shop}"   # inside text: rendered as text
      first_item: "${value.items[0].sku}"
      price: "$${value.price}"                         # $${ is a literal ${

A path starts at a root of :meth:`~actors.triggers.record.TriggerRecord.view` (``key``,
``value``, ``raw``, ``headers``, ``timestamp``; ``topic``, ``partition``, ``offset`` of a
Kafka record; ``queue``, ``message_id`` of an SQS message) and
goes on by names (``[A-Za-z0-9_-]``, joined by ``.``) and list indexes (``[n]``). A string
that is exactly one reference takes the referenced value with its JSON type (an int stays
an int); references inside other text render as text (JSON for non-strings). Every string
leaf of the arguments is a template, recursively; keys are literal.

A reference to something the record lacks fails that record (:class:`MissingField`,
naming the path); the trigger dead-letters it. Parsing is one left-to-right scan and
rendering one walk per reference: time linear in the template and the record, whatever
they hold (no regular expressions, no backtracking).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ROOTS", "MissingField", "Reference", "Template", "TemplateError"]

ROOTS = frozenset(
    {"key", "value", "raw", "headers", "topic", "partition", "offset", "timestamp"}
    | {"queue", "message_id"}
)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_DIGITS = frozenset("0123456789")
_PATH_GRAMMAR = "names of [A-Za-z0-9_-] joined by '.', or [n]"


class TemplateError(ValueError):
    """A template that does not parse; ``where`` is the argument it is in (``a.b[0]``)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(where, message)
        self.where = where
        self.message = message

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class MissingField(LookupError):
    """A record lacks what a reference names (the record fails, not the template)."""

    def __init__(self, reference: str) -> None:
        super().__init__(reference)
        self.reference = reference

    def __str__(self) -> str:
        return f"the record has no {self.reference}"


@dataclass(frozen=True, slots=True)
class Reference:
    """``${text}``: ``path`` is its steps (names, and ints for ``[n]``)."""

    text: str
    path: tuple[str | int, ...]

    def lookup(self, view: Mapping[str, Any]) -> Any:
        """The referenced value. Raises :class:`MissingField` if the record lacks it."""
        current: Any = view
        for step in self.path:
            if isinstance(step, int):
                if not isinstance(current, list) or step >= len(current):
                    raise MissingField(self.text)
                current = current[step]
            else:
                if not isinstance(current, Mapping) or step not in current:
                    raise MissingField(self.text)
                current = current[step]
        return current


def parse_path(text: str) -> tuple[str | int, ...]:
    """The steps of a reference's path. Raises ValueError naming the grammar."""
    steps: list[str | int] = []
    i, n = 0, len(text)
    expect_name = True
    while i < n:
        if expect_name:
            start = i
            while i < n and text[i] in _NAME_CHARS:
                i += 1
            if i == start:
                raise ValueError(f"'${{{text}}}' is not a path ({_PATH_GRAMMAR})")
            steps.append(text[start:i])
            expect_name = False
        elif text[i] == ".":
            i += 1
            expect_name = True
            if i == n:
                raise ValueError(f"'${{{text}}}' is not a path ({_PATH_GRAMMAR})")
        elif text[i] == "[":
            start = i + 1
            i = start
            while i < n and text[i] in _DIGITS:
                i += 1
            if i in (start, n) or text[i] != "]" or i - start > 9:
                raise ValueError(f"'${{{text}}}' is not a path ({_PATH_GRAMMAR})")
            steps.append(int(text[start:i]))
            i += 1
        else:
            raise ValueError(f"'${{{text}}}' is not a path ({_PATH_GRAMMAR})")
    if not steps:
        raise ValueError(f"'${{{text}}}' is not a path ({_PATH_GRAMMAR})")
    if not isinstance(steps[0], str) or steps[0] not in ROOTS:
        raise ValueError(
            f"'${{{text}}}' must start with one of {', '.join(sorted(ROOTS))} (the record's parts)"
        )
    return tuple(steps)


def parse_text(text: str) -> tuple[str | Reference, ...]:
    """A string as literal parts and references, in order. Raises ValueError."""
    parts: list[str | Reference] = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        j = text.find("$", i)
        if j < 0:
            literal.append(text[i:])
            break
        literal.append(text[i:j])
        if text.startswith("$${", j):
            literal.append("${")
            i = j + 3
        elif text.startswith("${", j):
            end = text.find("}", j + 2)
            if end < 0:
                raise ValueError("'${' is not closed by '}' (write $${ for a literal ${)")
            if joined := "".join(literal):
                parts.append(joined)
            literal = []
            inner = text[j + 2 : end]
            parts.append(Reference(inner, parse_path(inner)))
            i = end + 1
        else:
            literal.append("$")
            i = j + 1
    if literal and (joined := "".join(literal)):
        parts.append(joined)
    return tuple(parts)


@dataclass(frozen=True, slots=True)
class _Text:
    parts: tuple[str | Reference, ...]


def _compile(node: Any, where: str) -> Any:
    if isinstance(node, str):
        try:
            parts = parse_text(node)
        except ValueError as exc:
            raise TemplateError(where, str(exc)) from None
        return parts[0] if len(parts) == 1 and isinstance(parts[0], str) else _Text(parts)
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str):
                raise TemplateError(where, f"argument names must be strings, got {key!r}")
            out[key] = _compile(value, f"{where}.{key}" if where else key)
        return out
    if isinstance(node, list):
        return [_compile(item, f"{where}[{i}]") for i, item in enumerate(node)]
    if node is None or isinstance(node, bool | int | float):
        return node
    raise TemplateError(where, f"{type(node).__name__} is not a JSON value")


def _render(node: Any, view: Mapping[str, Any]) -> Any:
    if isinstance(node, _Text):
        if len(node.parts) == 1 and isinstance(node.parts[0], Reference):
            return node.parts[0].lookup(view)
        pieces = []
        for part in node.parts:
            if isinstance(part, str):
                pieces.append(part)
            else:
                value = part.lookup(view)
                pieces.append(value if isinstance(value, str) else json.dumps(value))
        return "".join(pieces)
    if isinstance(node, dict):
        return {key: _render(value, view) for key, value in node.items()}
    if isinstance(node, list):
        return [_render(item, view) for item in node]
    return node


class Template:
    """Compiled arguments: :meth:`parse` once (at configuration), :meth:`render` per record."""

    def __init__(self, compiled: dict[str, Any]) -> None:
        self._compiled = compiled

    @classmethod
    def parse(cls, arguments: Mapping[str, Any]) -> Template:
        """Compile every string leaf.

        Raises:
            TemplateError: naming the argument (``order.items[0]``) and why.
        """
        compiled = _compile(arguments, "")
        assert isinstance(compiled, dict)  # a Mapping compiles to a dict
        return cls(compiled)

    def render(self, view: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments for one record.

        Raises:
            MissingField: the record lacks a referenced part.
        """
        rendered: dict[str, Any] = _render(self._compiled, view)
        return rendered
