"""Clients, polite and hostile, of a real gateway, and a view of the gateway's process.

The gateway under test is what ``raybus up`` runs: a :class:`GatewayReplica` Ray actor
serving uvicorn in its own process (``running_gateway``). Its memory is that process's
resident set, read from ``/proc``; its log is that worker's log file in the Ray session.
"""

from __future__ import annotations

import gc
import json
import os
import socket
import struct
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import ray

from cluster.naming import NAMESPACE, actor_names
from tests.faults.answers import jsonrpc_messages
from transports.errors import CallError

__all__ = [
    "HOSTILE",
    "MODERN",
    "Answer",
    "GatewayProcess",
    "Hostile",
    "Ledger",
    "audit_records",
    "call_body",
    "gateway_process",
    "post",
    "reset_after",
]

VERSION = "2026-07-28"
META = {
    "io.modelcontextprotocol/protocolVersion": VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
}
# A 2026-07-28 tools/call is one self-contained HTTP request: no session, no handshake,
# so one HTTP exchange is exactly one JSON-RPC request (and one audit record).
MODERN = {
    "accept": "application/json, text/event-stream",
    "content-type": "application/json",
    "mcp-protocol-version": VERSION,
    "mcp-method": "tools/call",
}


def call_body(tool: str, arguments: dict[str, Any], request_id: Any = 1) -> bytes:
    """A 2026-07-28 ``tools/call`` request."""
    params = {"name": tool, "arguments": arguments, "_meta": META}
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}
    ).encode()


@dataclass(frozen=True)
class Hostile:
    """A request no client should send, and the answer it must get (None: any well-formed)."""

    label: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = 400
    code: int | None = None


def _with(request_id: Any = 1, **params: Any) -> bytes:
    """A tools/call of echo whose params are replaced by ``params`` where given."""
    body = {"name": "echo", "arguments": {"text": "x"}, "_meta": META, **params}
    return json.dumps(
        {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": body}
    ).encode()


_NESTED = b"[" * 10_000 + b"]" * 10_000
_DEEP_ARGUMENT = call_body("echo", {"text": "x"}).replace(
    b'"x"', b'{"a":' * 10_000 + b"1" + b"}" * 10_000
)
_PARAMS_ARRAY = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[{"name":"echo"}]}'
# Every JSON-RPC error code a hostile request may be answered with, by what was wrong.
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
HOSTILE = [
    Hostile("invalid JSON", b'{"jsonrpc":"2.0","id":1,', code=PARSE_ERROR),
    Hostile(
        "not UTF-8", call_body("echo", {"text": "x"}).replace(b'"x"', b'"\xff"'), code=PARSE_ERROR
    ),
    Hostile("a bare number", b"42", code=INVALID_REQUEST),
    Hostile("a bare string", b'"tools/call"', code=INVALID_REQUEST),
    Hostile("a batch", b"[" + call_body("echo", {"text": "x"}) + b"]", code=INVALID_REQUEST),
    Hostile("an empty body", b"", code=PARSE_ERROR),
    Hostile(
        "duplicate keys",
        call_body("echo", {"text": "x"}).replace(b'"name"', b'"name": "nope", "name"'),
        code=PARSE_ERROR,
    ),
    Hostile("10,000-deep arrays", _NESTED, code=PARSE_ERROR),
    Hostile("10,000-deep objects in an argument", _DEEP_ARGUMENT, code=PARSE_ERROR),
    Hostile("NaN", call_body("echo", {"text": "x"}).replace(b'"x"', b"NaN"), code=PARSE_ERROR),
    Hostile(
        "a number overflowing to infinity",
        call_body("echo", {"text": "x"}).replace(b'"x"', b"1e999"),
        code=PARSE_ERROR,
    ),
    Hostile(
        "a 5,000-digit integer",
        call_body("echo", {"text": "x"}).replace(b'"x"', b"9" * 5_000),
        code=PARSE_ERROR,
    ),
    Hostile(
        "a 4,000-digit integer where a string belongs",
        call_body("echo", {"text": "x"}).replace(b'"x"', b"9" * 4_000),
        status=None,
        code=INVALID_PARAMS,
    ),
    Hostile("a huge integer id", _with(request_id=10**30), status=None),
    Hostile("a float id", _with(request_id=1.5), code=INVALID_REQUEST),
    Hostile("a boolean id", _with(request_id=True), code=INVALID_REQUEST),
    Hostile("a null id", _with(request_id=None), code=INVALID_REQUEST),
    Hostile("an array id", _with(request_id=[1]), code=INVALID_REQUEST),
    Hostile("an object id", _with(request_id={"a": 1}), code=INVALID_REQUEST),
    Hostile(
        "no jsonrpc member",
        call_body("echo", {"text": "x"}).replace(b'"jsonrpc": "2.0", ', b""),
        code=INVALID_REQUEST,
    ),
    Hostile(
        "an unknown method",
        b'{"jsonrpc":"2.0","id":1,"method":"no/such/method","params":{"_meta":'
        + json.dumps(META).encode()
        + b"}}",
        {"mcp-method": "no/such/method"},
        status=None,
        code=METHOD_NOT_FOUND,
    ),
    Hostile("an unknown tool", _with(name="nope"), {"mcp-name": "nope"}, status=None),
    Hostile("arguments of the wrong type", _with(arguments={"text": 5}), status=None),
    Hostile("params as an array", _PARAMS_ARRAY, code=INVALID_REQUEST),
    Hostile(
        "a response instead of a request", b'{"jsonrpc":"2.0","id":1,"result":{}}', status=None
    ),
    Hostile(
        "a wrong content type",
        call_body("echo", {"text": "x"}),
        {"content-type": "text/plain"},
        status=None,
    ),
    Hostile(
        "a wrong accept", call_body("echo", {"text": "x"}), {"accept": "text/html"}, status=None
    ),
    Hostile(
        "a foreign Origin",
        call_body("echo", {"text": "x"}),
        {"origin": "http://evil.example"},
        status=403,
    ),
]


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    messages: list[Any] = field(default_factory=list)

    def final(self) -> dict[str, Any]:
        """The JSON-RPC response among the messages (the last one with an id)."""
        responses = [m for m in self.messages if isinstance(m, dict) and "method" not in m]
        assert responses, f"no JSON-RPC response in HTTP {self.status}: {self.body[:300]!r}"
        answer: dict[str, Any] = responses[-1]
        return answer

    def structured(self, method: str = "tools/call") -> Any:
        """The result's structured content; a JSON-RPC error raises :class:`CallError`."""
        final = self.final()
        if "error" in final:
            error = final["error"]
            raise CallError(method, error["code"], error["message"], error.get("data"))
        return final["result"].get("structuredContent")


class Ledger:
    """Counts the requests the gateway answered or refused (each owes one audit record)."""

    def __init__(self) -> None:
        self.requests = 0

    def saw(self, answer: Answer) -> Answer:
        if answer.status >= 400 or any(
            isinstance(m, dict) and "method" not in m for m in answer.messages
        ):
            self.requests += 1
        return answer


def audit_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines audit file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def post(
    http: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str] | None = None
) -> Answer:
    """POST ``body`` with the 2026-07-28 headers (``headers`` override them)."""
    sent = {**MODERN, "mcp-name": "echo", **(headers or {})}
    response = await http.post(url, content=body, headers=sent)
    kind = response.headers.get("content-type", "")
    try:
        messages = jsonrpc_messages(kind, response.content)
    except ValueError:
        messages = []
    return Answer(response.status_code, kind, response.content, messages)


def reset_after(port: int, data: bytes) -> None:
    """Connect, send ``data`` (maybe nothing), then reset the connection (RST)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if data:
            sock.sendall(data)


@dataclass
class GatewayProcess:
    """The process of the bus's one gateway replica."""

    handle: Any
    pid: int

    def resident_mib(self) -> float:
        resident_pages = int(Path(f"/proc/{self.pid}/statm").read_text().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20

    async def collected_resident_mib(self) -> float:
        """The resident set after a full collection inside the gateway's process."""
        await self.handle.__ray_call__.remote(lambda replica: gc.collect())
        return self.resident_mib()

    async def collected_blocks(self) -> int:
        """Memory blocks Python holds in the gateway's process after a full collection:
        what its objects use, apart from what the allocator keeps for reuse (resident
        memory does not shrink back when freed objects leave arenas partly used)."""

        def blocks(replica: Any) -> int:
            gc.collect()
            return sys.getallocatedblocks()

        count: int = await self.handle.__ray_call__.remote(blocks)
        return count

    def log_text(self) -> str:
        """What the replica's worker wrote to its log files (stdout and stderr)."""
        node: Any = ray._private.worker._global_node  # this driver's Ray node
        logs = Path(node.get_session_dir_path()) / "logs"
        files = sorted(logs.glob(f"worker-*-{self.pid}.*"))
        assert files, f"no log file of worker {self.pid} in {logs}"
        return "".join(p.read_text(errors="replace") for p in files)

    @contextmanager
    def peak_resident(self, every_s: float = 0.05) -> Iterator[list[float]]:
        """Samples the resident set in a thread; the list's max is the peak seen."""
        samples = [self.resident_mib()]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(every_s):
                samples.append(self.resident_mib())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield samples
        finally:
            done.set()
            thread.join(10)


async def gateway_process(bus: str) -> GatewayProcess:
    """The one gateway replica of ``bus`` (a one-node test cluster has exactly one)."""
    prefix = actor_names.gateway_prefix(bus)
    named: list[Any] = ray.util.list_named_actors(all_namespaces=True)
    names = [
        a["name"] for a in named if a["namespace"] == NAMESPACE and a["name"].startswith(prefix)
    ]
    assert len(names) == 1, names
    handle: Any = ray.get_actor(names[0], namespace=NAMESPACE)
    pid: int = await handle.__ray_call__.remote(lambda replica: os.getpid())
    return GatewayProcess(handle, pid)
