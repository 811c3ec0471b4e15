"""The error a :class:`~cluster.data.ToolCaller` raises when it cannot run at all."""

from __future__ import annotations

from transports.errors import BusError

__all__ = ["ToolCallerError"]


class ToolCallerError(BusError):
    """The bus, the tool or the column mapping is wrong; no row was called.

    Raised by the constructor (bus not running, unknown tool, an argument the tool
    requires that no column feeds) and by the first batch (a mapped column the dataset
    does not have), so a job fails at its start with this message instead of filling its
    ``error`` column with the same complaint for every row.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
