"""The SDK's shaping of a result, for results the gateway serves without its handlers.

The SDK's server runner shapes every handler result the same way before it goes on the
wire (``ServerRunner._serialize``, private): the protocol version's schema sieve for
core results, ``resultType`` on 2026-07-28 results, and the ``serverInfo`` stamp. The
gateway's direct path for tool calls must answer exactly as the SDK would, so it shapes
with the same public pieces, in the same order.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp_types import CORE_RESULT_TYPES, INTERNAL_ERROR, SERVER_INFO_META_KEY
from mcp_types.methods import serialize_server_result
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

__all__ = ["shaped_result"]

logger = logging.getLogger(__name__)


def shaped_result(
    server: Server[Any], method: str, version: str, result: dict[str, Any]
) -> dict[str, Any]:
    """``result`` as the SDK's runner would put it on the wire for ``method``.

    Raises:
        MCPError: the result does not fit the version's schema (a server's fault, so
            ``INTERNAL_ERROR``; the detail goes to the log only, as the SDK does).
    """
    result_type = result.get("resultType")
    if not isinstance(result_type, str) or result_type in CORE_RESULT_TYPES:
        try:
            result = serialize_server_result(method, version, result)
        except ValidationError:
            logger.exception("the server's result for %r does not fit its schema", method)
            raise MCPError(INTERNAL_ERROR, "Handler returned an invalid result") from None
    if version not in MODERN_PROTOCOL_VERSIONS:
        return result
    if result.get("resultType") is None:
        result["resultType"] = "complete"
    meta = result.get("_meta")
    if meta is None:
        result["_meta"] = {SERVER_INFO_META_KEY: server.server_info_stamp}
    elif isinstance(meta, dict) and meta.get(SERVER_INFO_META_KEY) is None:
        result["_meta"] = {**meta, SERVER_INFO_META_KEY: server.server_info_stamp}
    return result
