"""Secrets written as ``${NAME}`` in configuration, read from the environment at load.

Read at the process edge (the CLI or driver), so a secret need not sit in a file.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import SecretStr

__all__ = ["ENV_REF", "from_env"]

ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def from_env(value: Any) -> Any:
    """``"${NAME}"`` (plain or a SecretStr) becomes the variable's value; anything else
    is returned as it is.

    Raises:
        ValueError: the variable is not set or empty (pydantic reports it on the field).
    """
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    match = ENV_REF.match(raw) if isinstance(raw, str) else None
    if match is None:
        return value
    found = os.environ.get(match.group(1))
    if not found:
        raise ValueError(f"environment variable {match.group(1)} is not set")
    return found
