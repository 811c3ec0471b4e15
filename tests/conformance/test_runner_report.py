"""What the conformance runner reports of a failed check (unit: files only, no suite run)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conformance.runner import failed_checks


def test_each_failed_check_is_one_line_with_its_scenario_id_and_reason(tmp_path: Path) -> None:
    scenario = tmp_path / "results" / "server-stateless-2026"
    scenario.mkdir(parents=True)
    checks = [
        {"id": "stateless-ok", "status": "SUCCESS", "description": "fine"},
        {
            "id": "stateless-no-session",
            "status": "FAILURE",
            "errorMessage": "got a session id",
            "details": {"header": "mcp-session-id"},
        },
    ]
    (scenario / "checks.json").write_text(json.dumps(checks))
    (tmp_path / "results" / "broken").mkdir()
    (tmp_path / "results" / "broken" / "checks.json").write_text("{not json")

    lines = failed_checks(tmp_path)

    assert lines[0].startswith("broken: unreadable checks.json")
    assert lines[1:] == [
        'server-stateless-2026: stateless-no-session: got a session id {"header": "mcp-session-id"}'
    ]
