"""Rules that keep the house in order, checked with every test run.

- No module over 600 lines: past that a module holds more than one idea.
- No block of 10 or more identical lines twice in product code: one piece of code
  serves where the logic really is the same.
- ``transports/`` and ``actors/`` never import Ray: ruff's banned-api says so, from the
  ``.ruff.toml`` in each of them (checked here too, so a removed file cannot drop it).
"""

from __future__ import annotations

import ast
import hashlib
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("transports", "actors", "cluster")
EVERYTHING = (*PRODUCT, "tests", "benchmarks")
MAX_LINES = 600
MIN_REPEAT = 10


def modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def significant_lines(path: Path) -> list[tuple[int, str]]:
    """Lines that carry code: no blanks, comments, lone punctuation or imports."""
    kept = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = " ".join(raw.split())
        if not line or line.startswith("#") or not any(c.isalnum() for c in line):
            continue
        if line.startswith(("import ", "from ")):
            continue
        kept.append((number, line))
    return kept


def test_no_module_is_over_600_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in modules(*EVERYTHING)
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules: {long}"


def test_product_code_repeats_no_block_of_ten_lines() -> None:
    seen: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for path in modules(*PRODUCT):
        lines = significant_lines(path)
        for start in range(len(lines) - MIN_REPEAT + 1):
            window = "\n".join(text for _, text in lines[start : start + MIN_REPEAT])
            digest = hashlib.sha1(window.encode()).hexdigest()
            seen[digest].append((str(path.relative_to(ROOT)), lines[start][0]))
    repeated = []
    for places in seen.values():
        # Overlapping windows of one long run in one file are not a repeat.
        distinct = {places[0]}
        for place in places[1:]:
            if all(place[0] != p[0] or abs(place[1] - p[1]) >= MIN_REPEAT for p in distinct):
                distinct.add(place)
        if len(distinct) > 1:
            repeated.append(sorted(distinct))
    # One run of N repeated lines shows as N - 9 windows: name where each run starts.
    starts = [r for r in repeated if not any(_follows(r, other) for other in repeated)]
    assert not starts, f"blocks of {MIN_REPEAT}+ lines stand twice: {starts[:5]}"


def _follows(run: list[tuple[str, int]], other: list[tuple[str, int]]) -> bool:
    """Whether ``run`` continues ``other`` (every place a little further down)."""
    return run != other and all(
        a[0] == b[0] and 0 < a[1] - b[1] < MIN_REPEAT for a, b in zip(run, other, strict=False)
    )


@pytest.mark.parametrize("folder", ["transports", "actors"])
def test_the_lower_layers_never_import_ray(folder: str) -> None:
    offenders = []
    for path in modules(folder):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            if any(n == "ray" or n.startswith("ray.") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders
    assert '"ray".msg' in (ROOT / folder / ".ruff.toml").read_text()
