"""JSON-RPC 2.0 messages as strict pydantic models: the ``TransportMessage`` family.

A message is exactly one of :class:`Request` (``id`` + ``method``), :class:`Notification`
(``method``, no ``id``) or :class:`Response` (``id`` + exactly one of ``result`` /
``error``). Ids are strings or integers, never null, float or bool; the only ``null`` id
is the one an error response carries when the request's id could not be read (spec 5).

Routing data never lives here: it travels beside the body in an
:class:`transports.envelope.Envelope`. Bytes in and out go through
:mod:`transports.codec`.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, model_validator

__all__ = [
    "ErrorObject",
    "JSONRPCId",
    "Notification",
    "Request",
    "Response",
    "TransportMessage",
]

JSONRPCId = StrictStr | StrictInt
# params are "structured" values only: an object or an array (spec 4.2).
Params = dict[str, Any] | list[Any]

_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Message(BaseModel):
    model_config = _STRICT

    jsonrpc: Literal["2.0"] = "2.0"

    def to_json_dict(self) -> dict[str, Any]:
        """The wire form as plain JSON types, members in canonical order."""
        raise NotImplementedError


class _MethodMessage(_Message):
    method: StrictStr
    # None means "absent"; an explicit JSON null is refused by the codec (spec 4.2).
    params: Params | None = None


class Request(_MethodMessage):
    """A call that expects exactly one :class:`Response` with the same ``id``."""

    id: JSONRPCId

    def to_json_dict(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"jsonrpc": "2.0", "id": self.id, "method": self.method}
        if self.params is not None:
            wire["params"] = self.params
        return wire


class Notification(_MethodMessage):
    """A one-way message; it is never answered."""

    def to_json_dict(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"jsonrpc": "2.0", "method": self.method}
        if self.params is not None:
            wire["params"] = self.params
        return wire


class ErrorObject(BaseModel):
    """The ``error`` member of a failed :class:`Response`."""

    model_config = _STRICT

    code: StrictInt
    message: StrictStr
    data: Any = None

    def to_json_dict(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"code": self.code, "message": self.message}
        if "data" in self.model_fields_set:
            wire["data"] = self.data
        return wire


class Response(_Message):
    """The answer to a :class:`Request`: a ``result`` or an ``error``, never both.

    ``result`` may legitimately be ``null``, so presence is read from the fields that were
    set, not from the value.
    """

    id: JSONRPCId | None
    result: Any = None
    error: ErrorObject | None = None

    @model_validator(mode="after")
    def _exactly_one_outcome(self) -> Self:
        has_result = "result" in self.model_fields_set
        has_error = "error" in self.model_fields_set and self.error is not None
        if has_result == has_error:
            raise ValueError("a response has exactly one of result and error")
        if self.id is None and not has_error:
            raise ValueError("only an error response may have a null id")
        return self

    @classmethod
    def success(cls, request_id: JSONRPCId, result: Any) -> Response:
        """A successful response to ``request_id``."""
        return cls(id=request_id, result=result)

    @classmethod
    def failure(
        cls, request_id: JSONRPCId | None, code: int, message: str, data: Any = None
    ) -> Response:
        """An error response; ``request_id`` is ``None`` only when it could not be read."""
        error = (
            ErrorObject(code=code, message=message)
            if data is None
            else ErrorObject(code=code, message=message, data=data)
        )
        return cls(id=request_id, error=error)

    @property
    def is_error(self) -> bool:
        return self.error is not None

    def to_json_dict(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"jsonrpc": "2.0", "id": self.id}
        if self.error is not None:
            wire["error"] = self.error.to_json_dict()
        else:
            wire["result"] = self.result
        return wire


TransportMessage = Request | Response | Notification
