"""`raybus up` refuses a bus whose pools offer the same tool name, in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CLASH = """
name: clash{suffix}
pools:
  - name: geometry
    tools: "cluster.examples.functions"
    warm_spares: 0
  - name: shapes
    tools: "cluster.examples.functions"
    warm_spares: 0
    exclude: [word_count]
gateway:
  port: 0
"""


def test_raybus_up_with_one_tool_in_two_pools_fails_naming_the_tool_and_both_pools(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(CLASH.format(suffix=os.getpid()))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray of its own
    env["RAYBUS_CACHE_DIR"] = str(tmp_path)  # where `up` claims bus names
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "up", str(config)],
        capture_output=True,
        text=True,
        timeout=150,  # a hang stops here; start-up itself fails once both pools registered
        check=False,
        env=env,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "raybus: tool 'hypotenuse' is offered by pools 'geometry' and 'shapes': "
        "give one of them a namespace, or exclude the tool from one"
    )
    assert "serving MCP" not in result.stderr
