"""The batch file of `raybus call --batch`: every malformed line is named, with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import mcp_types as types
import pytest

from cluster.cli.batch import (
    BatchCall,
    BatchFile,
    BatchInputError,
    check_file,
    outcome_record,
    read_calls,
)
from cluster.client import IndexedOutcome
from transports.errors import BusTimeout, CallError


def _file(tmp_path: Path, *lines: str | bytes) -> Path:
    path = tmp_path / "calls.jsonl"
    path.write_bytes(
        b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)
    )
    return path


def test_calls_keep_their_line_numbers_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        '{"tool": "echo", "arguments": {"text": "a"}, "id": "x"}',
        "   ",
        '{"tool": "whoami"}',
        '{"tool": "echo", "arguments": {"text": "b"}}',
    )
    assert list(read_calls(path)) == [
        BatchCall(1, "echo", {"text": "a"}, "x"),
        BatchCall(3, "whoami", {}, None),
        BatchCall(4, "echo", {"text": "b"}, None),
    ]
    assert check_file(path) == BatchFile(calls=3, first_line_of={"echo": 1, "whoami": 3})


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"{not json", "not a JSON object: "),
        (b'{"tool": "echo", "tool": "add"}', "duplicate object key 'tool'"),
        (b'{"tool": "echo", "arguments": {"x": NaN}}', "NaN is not valid JSON"),
        (b'{"tool": "\xff"}', "not valid UTF-8"),
        (b'["echo", {}]', "expected a JSON object like"),
        (b'{"tool": "echo", "argument": {}}', "unknown key 'argument'"),
        (b'{"arguments": {}}', '"tool" must be a non-empty string'),
        (b'{"tool": ""}', '"tool" must be a non-empty string'),
        (b'{"tool": "echo", "arguments": [1]}', '"arguments" must be a JSON object'),
        (b'{"tool": "echo", "id": true}', '"id" must be a string or an integer'),
        (b'{"tool": "echo", "id": 1.5}', '"id" must be a string or an integer'),
    ],
)
def test_a_malformed_line_is_named_with_its_reason(
    tmp_path: Path, line: bytes, reason: str
) -> None:
    path = _file(tmp_path, '{"tool": "echo"}', "", line, '{"tool": "echo"}')
    with pytest.raises(BatchInputError) as caught:
        check_file(path)
    assert caught.value.line == 3
    assert str(caught.value).startswith(f"{path} line 3: ")
    assert reason in str(caught.value)


def test_results_and_errors_become_output_records() -> None:
    call = BatchCall(4, "echo", {"text": "hi"}, 7)
    result = types.CallToolResult(
        content=[types.TextContent(type="text", text="hi")], structured_content={"result": "hi"}
    )
    record = outcome_record(call, IndexedOutcome(0, result))
    assert (record["line"], record["id"]) == (4, 7)
    assert record["result"]["content"] == [{"type": "text", "text": "hi"}]
    assert record["result"]["structuredContent"] == {"result": "hi"}  # MCP's own names
    assert record["result"]["isError"] is False
    assert "error" not in record
    refused = CallError("tools/call", 1002, "overloaded", {"retryAfterSeconds": 0.5})
    assert outcome_record(BatchCall(5, "echo", {}, None), IndexedOutcome(1, refused)) == {
        "line": 5,
        "error": {"code": 1002, "message": "overloaded", "data": {"retryAfterSeconds": 0.5}},
    }
    timed_out = outcome_record(call, IndexedOutcome(2, BusTimeout("tools/call", 60)))
    assert timed_out["error"]["code"] == 1001
    json.dumps(timed_out)  # every record is JSON
