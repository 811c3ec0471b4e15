"""Fixtures shared by the cluster tests."""

from __future__ import annotations

import pytest

from tests.conformance.runner import ConformanceUnavailable, ensure_suite


@pytest.fixture(scope="session")
def suite() -> None:
    """The pinned conformance suite, installed: skipped without npm, a failure when npm
    cannot install it (installed once per session, then found in the cache)."""
    try:
        ensure_suite()
    except ConformanceUnavailable as exc:
        pytest.skip(str(exc))
