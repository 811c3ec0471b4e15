"""The testkit's server plus ``record_read_only``: ``record`` declared read-only.

On a broker backend a worker skips the exactly-once ledger for a read-only tool, so a
test needs a read-only tool that leaves a trace of each run. The annotation is what is
under test here; the tool writes only to the file the test names.

Name it as a pool's ``server:`` (``tests.cluster.read_only_probe:server``); importing it
adds the tool to the testkit's server object of the importing process.
"""

from __future__ import annotations

from mcp_types import ToolAnnotations

from cluster.examples.testkit import server

__all__ = ["READ_ONLY_TOOL", "server"]

READ_ONLY_TOOL = "record_read_only"


@server.tool(name=READ_ONLY_TOOL, annotations=ToolAnnotations(read_only_hint=True))
async def record_read_only(path: str, token: str) -> str:
    """``record``, annotated read-only: appends ``token`` as a line to ``path``."""
    with open(path, "a", encoding="utf-8") as out:  # noqa: ASYNC230 - one short line
        out.write(token + "\n")
    return token
