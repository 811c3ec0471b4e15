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

__all__ = ["LABEL_KEY", "LABEL_VALUE", "label_problem", "labels_of", "with_labels"]

LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
_PREFIX = "label."


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


def with_labels(envelope: Envelope, labels: Mapping[str, str]) -> Envelope:
    """A copy of ``envelope`` carrying ``labels`` over the ones it had (same key: replaced).

    Raises:
        ValueError: a key or value breaks the label grammar.
    """
    if not labels:
        return envelope
    for key, value in labels.items():
        if (problem := label_problem(key, value)) is not None:
            raise ValueError(problem)
    names = {f"{_PREFIX}{key}": value for key, value in labels.items()}
    kept = [(name, value) for name, value in envelope.attributes if name not in names]
    return replace(envelope, attributes=tuple(sorted([*kept, *names.items()])))
