"""Rows -> tool arguments, outcomes -> the result and error columns: without Ray."""

from __future__ import annotations

import datetime
import json
import math
import pickle
from typing import Any

import mcp_types as types
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from cluster.data.columns import ERROR_TYPE, ArgumentMapping, Outcome, as_arrow, with_outcomes
from cluster.data.errors import ToolCallerError
from transports.errors import (
    INVALID_PARAMS,
    BusErrorCode,
    BusTimeout,
    CallError,
    ConnectionClosed,
    InvalidRequest,
)

SCORE = {
    "name": "score",
    "inputSchema": {
        "type": "object",
        "properties": {"text": {"type": "string"}, "lang": {"type": "string"}},
        "required": ["text"],
    },
}


def test_a_mapping_that_feeds_every_required_argument_is_accepted() -> None:
    ArgumentMapping({"text": "review"}).check_tool(SCORE)
    ArgumentMapping({"text": "review", "lang": "language"}).check_tool(SCORE)


def test_a_required_argument_no_column_feeds_is_named() -> None:
    with pytest.raises(ToolCallerError, match=r"tool 'score' requires the argument\(s\) 'text'"):
        ArgumentMapping({"lang": "language"}).check_tool(SCORE)


def test_an_argument_the_tool_does_not_have_is_named() -> None:
    with pytest.raises(ToolCallerError, match=r"no argument\(s\) 'txt'.*'text', 'lang'"):
        ArgumentMapping({"text": "review", "txt": "review"}).check_tool(SCORE)


def test_arguments_that_are_neither_a_mapping_of_names_nor_a_function_are_refused() -> None:
    with pytest.raises(ToolCallerError, match="must map each tool argument to a column"):
        ArgumentMapping({"text": 3})  # type: ignore[dict-item]
    with pytest.raises(ToolCallerError, match="must map each tool argument"):
        ArgumentMapping(["text"])  # type: ignore[arg-type]


def test_a_missing_column_is_named_with_the_columns_there_are() -> None:
    mapping = ArgumentMapping({"text": "review"})
    with pytest.raises(ToolCallerError, match=r"no column\(s\) 'review'.*\['id', 'body'\]"):
        mapping.check_columns(["id", "body"], ("result", "error"))


def test_a_column_the_stage_would_overwrite_is_named() -> None:
    mapping = ArgumentMapping({"text": "review"})
    with pytest.raises(ToolCallerError, match="already has column\\(s\\) 'error'"):
        mapping.check_columns(["review", "error"], ("result", "error"))


def test_each_row_gets_its_arguments_from_its_columns() -> None:
    table = pa.table({"id": [1, 2], "review": ["good", "bad"], "lang": ["en", None]})
    rows = ArgumentMapping({"text": "review", "lang": "lang"}).rows(table)
    assert rows == [{"text": "good", "lang": "en"}, {"text": "bad", "lang": None}]


def test_one_column_may_feed_two_arguments() -> None:
    table = pa.table({"review": ["good"]})
    rows = ArgumentMapping({"text": "review", "lang": "review"}).rows(table)
    assert rows == [{"text": "good", "lang": "good"}]


@pytest.mark.parametrize(
    ("value", "arrow_type"),
    [(datetime.datetime(2026, 1, 1), pa.timestamp("us")), (math.nan, pa.float64())],
)
def test_a_value_that_is_not_json_is_that_rows_error_naming_argument_and_column(
    value: Any, arrow_type: pa.DataType
) -> None:
    table = pa.table({"when": pa.array([value], arrow_type), "review": ["ok"]})
    [row] = ArgumentMapping({"text": "review", "at": "when"}).rows(table)
    assert isinstance(row, Outcome)
    assert row.error is not None
    assert row.error["code"] == INVALID_PARAMS
    assert "argument 'at' (column 'when') is not JSON" in row.error["message"]


def test_a_function_builds_each_rows_arguments() -> None:
    table = pa.table({"title": ["A", "B"], "body": ["x", "y"]})
    rows = ArgumentMapping(lambda r: {"text": f"{r['title']}: {r['body']}"}).rows(table)
    assert rows == [{"text": "A: x"}, {"text": "B: y"}]


def test_a_function_reading_a_column_the_batch_lacks_fails_the_batch_naming_it() -> None:
    table = pa.table({"body": ["x"]})
    with pytest.raises(ToolCallerError, match=r"reads column 'title'.*\['body'\]"):
        ArgumentMapping(lambda r: {"text": r["title"]}).rows(table)


def test_a_missing_key_inside_a_value_is_only_that_rows_error() -> None:
    table = pa.table({"meta": [{"lang": "en"}, {"lang": None}]})
    rows = ArgumentMapping(lambda r: {"text": r["meta"]["langg"]}).rows(table)
    assert all(isinstance(row, Outcome) and row.error for row in rows)


def test_a_function_may_probe_for_optional_columns() -> None:
    table = pa.table({"body": ["x"]})
    rows = ArgumentMapping(lambda r: {"text": r.get("title", "untitled")}).rows(table)
    assert rows == [{"text": "untitled"}]


def test_a_function_failing_on_one_row_is_only_that_rows_error() -> None:
    table = pa.table({"n": [1, 0, 2]})
    rows = ArgumentMapping(lambda r: {"x": 1 / r["n"]}).rows(table)
    assert rows[0] == {"x": 1.0}
    assert rows[2] == {"x": 0.5}
    failed = rows[1]
    assert isinstance(failed, Outcome)
    assert failed.error is not None
    assert "ZeroDivisionError" in failed.error["message"]


def test_a_function_returning_no_dict_is_that_rows_error() -> None:
    [row] = ArgumentMapping(lambda r: ["text"]).rows(pa.table({"n": [1]}))  # type: ignore[arg-type,return-value]
    assert isinstance(row, Outcome)
    assert row.error is not None
    assert "returned list, not a dict" in row.error["message"]


def result(**fields: Any) -> types.CallToolResult:
    return types.CallToolResult.model_validate(fields)


def test_structured_content_is_the_result_as_json() -> None:
    outcome = Outcome.of_result(
        result(content=[{"type": "text", "text": "{}"}], structuredContent={"score": 0.5})
    )
    assert outcome.error is None
    assert json.loads(outcome.result or "") == {"score": 0.5}


def test_text_content_is_the_result_as_a_json_string() -> None:
    outcome = Outcome.of_result(result(content=[{"type": "text", "text": "hello"}]))
    assert json.loads(outcome.result or "") == "hello"


def test_a_tool_error_result_is_an_error_without_a_code() -> None:
    outcome = Outcome.of_result(result(content=[{"type": "text", "text": "no"}], isError=True))
    assert outcome == Outcome(error={"code": None, "message": "no"})


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (CallError("tools/call", BusErrorCode.OVERLOADED, "full"), BusErrorCode.OVERLOADED),
        (BusTimeout("tools/call", 5.0), BusErrorCode.DEADLINE_EXCEEDED),
        (InvalidRequest("cannot encode"), -32600),
        (ConnectionClosed("gone"), None),
    ],
)
def test_a_failed_call_is_an_error_with_its_code(error: Any, code: int | None) -> None:
    outcome = Outcome.of_error(error)
    assert outcome.result is None
    assert outcome.error is not None
    assert outcome.error["code"] == code


def test_the_added_columns_have_fixed_types_even_when_every_row_succeeded() -> None:
    table = pa.table({"review": ["a", "b"]})
    out = with_outcomes(table, [Outcome(result='"a"'), Outcome(result='"b"')], "result", "error")
    assert out.schema.field("result").type == pa.string()
    assert out.schema.field("error").type == ERROR_TYPE
    assert out.column("error").null_count == 2
    passed, original = out.column("review").chunk(0), table.column("review").chunk(0)
    assert passed.buffers()[2].address == original.buffers()[2].address  # not copied


def test_results_and_errors_stay_with_their_rows() -> None:
    outcomes = [Outcome(result="1"), Outcome.failed(7, "bad"), Outcome(result="3")]
    out = with_outcomes(pa.table({"n": [1, 2, 3]}), outcomes, "result", "error")
    assert out.to_pylist() == [
        {"n": 1, "result": "1", "error": None},
        {"n": 2, "result": None, "error": {"code": 7, "message": "bad"}},
        {"n": 3, "result": "3", "error": None},
    ]


def test_the_start_up_error_pickles() -> None:
    error = ToolCallerError("bus 'x' is not running")
    assert str(pickle.loads(pickle.dumps(error))) == "bus 'x' is not running"


@pytest.mark.parametrize(
    "batch",
    [
        {"review": np.array(["good", "bad"]), "n": np.array([1, 2])},
        pd.DataFrame({"review": ["good", "bad"], "n": [1, 2]}),
        pa.table({"review": ["good", "bad"], "n": [1, 2]}),
    ],
    ids=["numpy", "pandas", "pyarrow"],
)
def test_every_ray_data_batch_format_reads_as_the_same_table(batch: Any) -> None:
    table = as_arrow(batch)
    assert table.select(["review", "n"]).to_pylist() == [
        {"review": "good", "n": 1},
        {"review": "bad", "n": 2},
    ]
