"""From rows to tool arguments, and from call outcomes to the two columns a batch gains.

``arguments`` is either a mapping from each tool argument to the column holding its value
(``{"text": "review"}``), checked against the tool's ``inputSchema`` before any row is
called, or a function from a row (a dict of column values) to the arguments dict.

Every output batch is the input batch (an Arrow table; its columns untouched, zero-copy)
plus two columns with fixed Arrow types, so blocks of any content concatenate, write to
Parquet and convert to pandas without type inference:

* ``result`` (``string``): the tool's structured content as JSON text, or, when it has
  none, its text content as a JSON string (non-text content: the content list as JSON).
  Any shape fits one column; ``json.loads`` gives it back. Null when the call failed.
* ``error`` (``struct<code: int64, message: string>``): null when the call succeeded;
  otherwise the JSON-RPC or :class:`~transports.errors.BusErrorCode` code and the message.
  ``code`` is null for a tool's own error result (``isError``) and for a row whose
  arguments could not be built (the ``arguments`` function raised).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mcp_types as types
import pyarrow as pa
from ray.data.block import BlockAccessor

from cluster.data.errors import ToolCallerError
from transports.errors import (
    INVALID_PARAMS,
    BusError,
    BusErrorCode,
    BusTimeout,
    CallError,
    InvalidMessage,
)

__all__ = [
    "ERROR_TYPE",
    "ArgumentMapping",
    "ArgumentsFn",
    "Outcome",
    "as_arrow",
    "with_outcomes",
]

ERROR_TYPE = pa.struct([("code", pa.int64()), ("message", pa.string())])

ArgumentsFn = Callable[[dict[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class Outcome:
    """One row's answer: JSON text of the result, or an error ``{code, message}``."""

    result: str | None = None
    error: dict[str, Any] | None = None

    @classmethod
    def failed(cls, code: int | None, message: str) -> Outcome:
        return cls(error={"code": code, "message": message})

    @classmethod
    def of_result(cls, result: types.CallToolResult) -> Outcome:
        if result.is_error:
            return cls.failed(None, _text(result) or "the tool reported an error")
        if result.structured_content is not None:
            return cls(result=json.dumps(result.structured_content))
        if any(isinstance(block, types.TextContent) for block in result.content):
            return cls(result=json.dumps(_text(result)))
        blocks = [block.model_dump(mode="json", by_alias=True) for block in result.content]
        return cls(result=json.dumps(blocks))

    @classmethod
    def of_error(cls, error: BusError) -> Outcome:
        if isinstance(error, CallError):
            return cls.failed(error.code, error.message)
        if isinstance(error, BusTimeout):
            return cls.failed(BusErrorCode.DEADLINE_EXCEEDED, str(error))
        if isinstance(error, InvalidMessage):
            return cls.failed(error.code, error.detail)
        return cls.failed(None, str(error))


def _text(result: types.CallToolResult) -> str:
    return "\n".join(b.text for b in result.content if isinstance(b, types.TextContent))


class ArgumentMapping:
    """Builds each row's tool arguments from ``arguments`` (see the module docstring).

    Raises:
        ToolCallerError: ``arguments`` is neither a mapping of names to column names nor
            a function.
    """

    def __init__(self, arguments: Mapping[str, str] | ArgumentsFn) -> None:
        if callable(arguments):
            self._function: ArgumentsFn | None = arguments
            self._columns: dict[str, str] = {}
            return
        if not isinstance(arguments, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in arguments.items()
        ):
            raise ToolCallerError(
                "arguments must map each tool argument to a column name "
                f"(e.g. {{'text': 'review'}}) or be a function of a row; got {arguments!r}"
            )
        self._function = None
        self._columns = dict(arguments)

    def check_tool(self, tool: Mapping[str, Any]) -> None:
        """Every argument the tool requires is fed by a column; every mapped one exists.

        A function of a row is not checked here: its rows' arguments are the server's to
        judge, one row at a time.
        """
        if self._function is not None:
            return
        name = tool.get("name")
        schema = tool.get("inputSchema") or {}
        properties = schema.get("properties") or {}
        missing = [a for a in schema.get("required") or () if a not in self._columns]
        if missing:
            raise ToolCallerError(
                f"tool {name!r} requires the argument(s) {', '.join(map(repr, missing))}, "
                f"which `arguments` does not map to a column (it maps {self._columns})"
            )
        if properties and not schema.get("additionalProperties"):
            unknown = [a for a in self._columns if a not in properties]
            if unknown:
                raise ToolCallerError(
                    f"tool {name!r} has no argument(s) {', '.join(map(repr, unknown))}; "
                    f"its arguments are {', '.join(map(repr, properties))}"
                )

    def check_columns(self, names: Sequence[str], produced: Sequence[str]) -> None:
        """The batch has every mapped column and none of the columns this stage adds.

        Raises:
            ToolCallerError: naming the column.
        """
        present = set(names)
        missing = [c for c in dict.fromkeys(self._columns.values()) if c not in present]
        if missing:
            raise ToolCallerError(
                f"the dataset has no column(s) {', '.join(map(repr, missing))} "
                f"(mapped by `arguments` {self._columns}); its columns are {list(names)}"
            )
        taken = [c for c in produced if c in present]
        if taken:
            raise ToolCallerError(
                f"the dataset already has column(s) {', '.join(map(repr, taken))}, which "
                "ToolCaller would overwrite: choose other result_column / error_column names"
            )

    def rows(self, table: pa.Table) -> list[dict[str, Any] | Outcome]:
        """Each row's arguments, or the row's error when they cannot be built.

        Raises:
            ToolCallerError: the ``arguments`` function reads a column the batch does not
                have (a mistake in the job, not in one row).
        """
        if self._function is None:
            by_column = table.select(list(dict.fromkeys(self._columns.values()))).to_pylist()
            return [
                _as_json_arguments({a: row[c] for a, c in self._columns.items()}, self._columns)
                for row in by_column
            ]
        names = table.column_names
        return [_arguments_from(self._function, _Row(row), names) for row in table.to_pylist()]


class _MissingColumn(KeyError):
    """A row was asked for a column the batch does not have (a KeyError to user code)."""


class _Row(dict[str, Any]):
    """A row handed to the arguments function: a missing column is told from other
    KeyErrors (a missing key inside a struct value is one row's problem, not the job's)."""

    def __missing__(self, column: str) -> Any:
        raise _MissingColumn(column)


def _arguments_from(function: ArgumentsFn, row: _Row, names: list[str]) -> dict[str, Any] | Outcome:
    try:
        arguments: object = function(row)
    except _MissingColumn as exc:
        raise ToolCallerError(
            f"the arguments function reads column {exc.args[0]!r}, which the "
            f"dataset does not have; its columns are {names}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - the user's function failing on a row is that row's answer
        return Outcome.failed(None, f"the arguments function failed: {exc!r}")
    if not isinstance(arguments, Mapping):
        return Outcome.failed(
            None, f"the arguments function returned {type(arguments).__name__}, not a dict"
        )
    return _as_json_arguments(dict(arguments), {})


def _as_json_arguments(
    arguments: dict[str, Any], columns: Mapping[str, str]
) -> dict[str, Any] | Outcome:
    """The arguments if they encode as JSON; else the row's error naming the argument.

    Checked here so one row's unencodable value (a timestamp, NaN, bytes) is that row's
    error and never reaches the client's submission batch.
    """
    try:
        json.dumps(arguments, allow_nan=False)
    except (TypeError, ValueError):
        for name, value in arguments.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError) as exc:
                where = f" (column {columns[name]!r})" if name in columns else ""
                return Outcome.failed(
                    INVALID_PARAMS, f"argument {name!r}{where} is not JSON: {exc}"
                )
        return Outcome.failed(INVALID_PARAMS, "the arguments are not JSON")
    return arguments


def as_arrow(batch: pa.Table | Any) -> pa.Table:
    """A batch of any Ray Data format as an Arrow table (a pyarrow batch as it is)."""
    if isinstance(batch, pa.Table):
        return batch
    table = BlockAccessor.for_block(BlockAccessor.batch_to_block(batch)).to_arrow()
    if not isinstance(table, pa.Table):
        raise TypeError(f"cannot read a batch of type {type(batch).__name__} as a table")
    return table


def with_outcomes(
    table: pa.Table, outcomes: Sequence[Outcome], result_column: str, error_column: str
) -> pa.Table:
    """``table`` plus the result and error columns, in row order."""
    results = pa.array([o.result for o in outcomes], pa.string())
    errors = pa.array([o.error for o in outcomes], ERROR_TYPE)
    return table.append_column(result_column, results).append_column(error_column, errors)
