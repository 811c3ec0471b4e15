"""Bytes <-> :data:`TransportMessage`, strictly, with bounded cost.

Decoding checks, in order: size, UTF-8, nesting depth (before parsing, so a deeply nested
input is refused in linear time and never reaches the recursive parser), JSON syntax
(duplicate keys, NaN/Infinity and numbers beyond float range such as ``1e400``
rejected), then JSON-RPC shape. Every failure is one of
:class:`~transports.errors.MessageTooLarge`, :class:`~transports.errors.ParseError` or
:class:`~transports.errors.InvalidRequest`; the latter two carry the JSON-RPC error a
peer should be answered with.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from itertools import accumulate, dropwhile
from typing import Any

from pydantic import ValidationError

from transports.errors import InvalidMessage, InvalidRequest, MessageTooLarge, ParseError
from transports.message import Notification, Request, Response, TransportMessage

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DecodeLimits",
    "decode_message",
    "encode_message",
    "error_response_for",
]

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Bounds on what :func:`decode_message` accepts."""

    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_depth: int = DEFAULT_MAX_DEPTH

    def __post_init__(self) -> None:
        if self.max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        if self.max_depth < 1:
            raise ValueError("max_depth must be positive")


DEFAULT_LIMITS = DecodeLimits()

# "A JSON string" as an unrolled loop with possessive runs. An unterminated string also
# matches (to the end of the text): otherwise ``sub`` would retry the failed scan from
# every later quote, and ``"\"\"\"...`` would cost the square of its length. Such text
# is not JSON anyway; ``json.loads`` reports it.
_JSON_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_WEIGHT = {"[": 1, "{": 1, "]": -1, "}": -1}


def _check_depth(text: str, max_depth: int) -> None:
    # Fast path: fewer openers than the bound cannot nest deeper than it.
    if text.count("[") + text.count("{") <= max_depth:
        return
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    # The running sum of +1/-1 is the nesting depth; dropwhile stops at the first level
    # past the bound. Every step runs in C, so deep input is refused after max_depth + 1
    # brackets and wide input costs one linear pass, never the recursive parser.
    depths = accumulate(map(_BRACKET_WEIGHT.__getitem__, brackets))
    if next(dropwhile(max_depth.__ge__, depths), None) is not None:
        raise ParseError(f"JSON nesting is deeper than {max_depth}")


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate object key {duplicate!r}")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # 1e400 is valid JSON but overflows to inf, which no JSON encoder can send on.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _readable_id(obj: Any) -> str | int | None:
    if isinstance(obj, dict):
        candidate = obj.get("id")
        if isinstance(candidate, str) or (
            isinstance(candidate, int) and not isinstance(candidate, bool)
        ):
            return candidate
    return None


# One decoder for every message: ``json.loads`` with hooks builds a new one per call
# (a third of a small message's parse time).
_DECODER = json.JSONDecoder(
    object_pairs_hook=_object_without_duplicates,
    parse_constant=_reject_constant,
    parse_float=_finite_float,
)


def parse_json(data: bytes | bytearray | memoryview | str, limits: DecodeLimits) -> Any:
    """Parse bytes or text into JSON values under ``limits``.

    Raises:
        MessageTooLarge: over ``limits.max_message_bytes``.
        ParseError: not UTF-8, too deep, not JSON, duplicate keys, NaN or Infinity
            (also as an overflowing number such as ``1e400``).
    """
    if isinstance(data, str):
        text = data
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limits.max_message_bytes:
            raise MessageTooLarge(size, limits.max_message_bytes)
    else:
        if len(data) > limits.max_message_bytes:
            raise MessageTooLarge(len(data), limits.max_message_bytes)
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ParseError(f"not valid UTF-8 at byte {exc.start}") from None
    _check_depth(text, limits.max_depth)
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise ParseError("JSON nesting is too deep") from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError, as are the hooks'
        raise ParseError(str(exc)) from None


def message_from_json(obj: Any) -> TransportMessage:
    """Classify and validate parsed JSON as one JSON-RPC 2.0 message.

    Raises:
        InvalidRequest: a batch, or anything that is not a valid request, notification or
            response; carries the id when one could be read.
    """
    if isinstance(obj, list):
        raise InvalidRequest("JSON-RPC batches are not supported")
    if not isinstance(obj, dict):
        raise InvalidRequest("a JSON-RPC message must be a JSON object")
    request_id = _readable_id(obj)
    if obj.get("jsonrpc") != "2.0":
        raise InvalidRequest('"jsonrpc" must be exactly "2.0"', request_id)
    model: type[Request] | type[Notification] | type[Response]
    if "method" in obj:
        if "params" in obj and obj["params"] is None:
            raise InvalidRequest("params, when present, must be an object or an array", request_id)
        model = Request if "id" in obj else Notification
    elif "result" in obj or "error" in obj:
        model = Response
    else:
        raise InvalidRequest("neither a request, a notification nor a response", request_id)
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or model.__name__
        raise InvalidRequest(f"{where}: {first['msg']}", request_id) from None


def decode_message(
    data: bytes | bytearray | memoryview | str, limits: DecodeLimits = DEFAULT_LIMITS
) -> TransportMessage:
    """Decode one JSON-RPC 2.0 message.

    Raises:
        MessageTooLarge: over ``limits.max_message_bytes``.
        ParseError: the bytes are not JSON we accept (answer with -32700, id null).
        InvalidRequest: JSON, but not a valid JSON-RPC 2.0 message (answer with -32600).
    """
    return message_from_json(parse_json(data, limits))


def encode_message(message: TransportMessage) -> bytes:
    """Encode a message as compact UTF-8 JSON (no trailing newline).

    Raises:
        InvalidMessage: the message holds values JSON cannot represent (NaN, sets, ...).
    """
    wire = message.to_json_dict()
    try:
        return json.dumps(wire, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode(
            "utf-8"
        )
    except UnicodeEncodeError:
        # A lone surrogate (legal in a JSON \\u escape) has no UTF-8 form; keep it escaped.
        return json.dumps(wire, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode(
            "ascii"
        )
    except (TypeError, ValueError) as exc:
        request_id = getattr(message, "id", None)
        raise InvalidRequest(f"cannot encode as JSON: {exc}", request_id) from None


def error_response_for(error: InvalidMessage) -> Response:
    """The JSON-RPC error response that answers input rejected with ``error``."""
    obj = error.error_object()
    return Response.failure(error.request_id, obj["code"], obj["message"], obj["data"])
