"""Labels on a request (``region=eu``): string pairs that routing and workers read.

They travel in :attr:`Envelope.attributes` as ``label.<key>`` (sealed with the envelope
on brokers; SQS attribute names allow ``.``), so every transport carries them unchanged
and no body is decoded to read them.

Keys and values follow a Kubernetes-like grammar (lowercase, digits, ``.``, ``-``, ``_``;
keys may also hold ``/``), checked by :func:`label_problem` in time linear in the input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace

from transports.envelope import Envelope

__all__ = [
    "LABEL_KEY",
    "LABEL_VALUE",
    "META_KEY",
    "checked_labels",
    "label_conflict",
    "label_problem",
    "labels_in_meta",
    "labels_of",
    "with_labels",
]

LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_PREFIX = "label."
# Where an MCP caller puts its labels: params._meta["io.raybus/labels"] = {"region": "eu"}.
META_KEY = "io.raybus/labels"


def label_problem(key: str, value: str) -> str | None:
    """Why ``key: value`` is not a valid label, or None when it is."""
    if not LABEL_KEY.match(key):
        return f"label key {key!r} must match {LABEL_KEY.pattern}"
    if not LABEL_VALUE.match(value):
        return f"value of label {key!r} must match {LABEL_VALUE.pattern}"
    return None


def labels_of(envelope: Envelope) -> dict[str, str]:
    """The labels an envelope carries (empty when none)."""
    return {
        name.removeprefix(_PREFIX): value
        for name, value in envelope.attributes
        if name.startswith(_PREFIX)
    }


def checked_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    """``labels`` as a dict, each checked.

    Raises:
        ValueError: a key or value breaks the label grammar.
    """
    for key, value in (labels or {}).items():
        if (problem := label_problem(key, value)) is not None:
            raise ValueError(problem)
    return dict(labels or {})


def with_labels(envelope: Envelope, labels: Mapping[str, str]) -> Envelope:
    """A copy of ``envelope`` carrying ``labels`` over the ones it had (same key: replaced).

    Raises:
        ValueError: a key or value breaks the label grammar.
    """
    labels = checked_labels(labels)
    if not labels:
        return envelope
    names = {f"{_PREFIX}{key}": value for key, value in labels.items()}
    kept = [(name, value) for name, value in envelope.attributes if name not in names]
    return replace(envelope, attributes=tuple(sorted([*kept, *names.items()])))


def label_conflict(pinned: Mapping[str, str], asked: Mapping[str, str]) -> str | None:
    """Why ``asked`` labels contradict ``pinned`` ones (a client's, a token's), or None.

    A pinned label is never silently replaced: a call that asks for another value of it
    is refused (1010) instead.
    """
    for key, value in asked.items():
        if key in pinned and pinned[key] != value:
            return f"call labelled {key}={value} on a caller pinned to {key}={pinned[key]}"
    return None


def labels_in_meta(params: Mapping[str, object] | None) -> dict[str, str]:
    """The labels a request asks for in ``params._meta["io.raybus/labels"]`` (empty if none).

    Raises:
        ValueError: they are not an object of label strings.
    """
    meta = params.get("_meta") if params is not None else None
    asked = meta.get(META_KEY) if isinstance(meta, dict) else None
    if asked is None:
        return {}
    if not isinstance(asked, dict) or not all(isinstance(v, str) for v in asked.values()):
        raise ValueError(f"_meta[{META_KEY!r}] must be an object of strings")
    return checked_labels(asked)
