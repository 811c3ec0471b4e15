"""Figures the fault tests measure, printed at the end of the test session.

A fault test's verdict (requests, outcomes, recovery times) is the evidence the suite
exists for; pytest hides a passing test's output, so each figure is also kept here and
``tests/conftest.py`` prints them all in a "fault figures" section after the run, in CI
logs too.
"""

from __future__ import annotations

__all__ = ["FIGURES", "figure"]

FIGURES: list[str] = []


def figure(line: str) -> None:
    """Print ``line`` (for ``pytest -s``) and keep it for the session's summary."""
    print(f"\n{line}")
    FIGURES.append(line.strip())
