"""Bearer tokens configured as SHA-256 hashes, never as plaintext."""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["TokenTable", "hash_token"]


def hash_token(token: str) -> str:
    """The hex SHA-256 of a token, as it is written in the configuration."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenTable:
    """Maps presented tokens to principals by comparing hashes in constant time."""

    def __init__(self, hashes_to_principals: dict[str, str]) -> None:
        self._entries = [(h.lower(), p) for h, p in hashes_to_principals.items()]

    def __bool__(self) -> bool:
        return bool(self._entries)

    def principal_for(self, token: str) -> str | None:
        presented = hash_token(token)
        found = None
        for expected, principal in self._entries:
            # No early exit: the time taken does not depend on which entry matched.
            if hmac.compare_digest(presented, expected):
                found = principal
        return found
