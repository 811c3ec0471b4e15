"""Case 11: hypothesis over the codec and over the gateway's HTTP handler.

The codec must decode any bytes into a message that re-encodes to itself, or refuse
them with one of its documented errors. The gateway's whole HTTP app (``http_app``: the
door's guards, the direct path, the SDK's Streamable HTTP transport and the policy
chain) is driven in process over a fake bus with requests drawn from a grammar of
almost-right MCP traffic; every answer must be well formed (``tests.faults.answers``),
and nothing may be logged as an error. Examples are derandomized (CI sees the same
inputs every run); ``RAYBUS_FAULT_SCALE=soak`` runs ten times as many.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx2 as httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.config import parse_config
from cluster.gateway.app import http_app
from cluster.gateway.server import Gateway
from tests.cluster.gateway.fake_bus import fake_bus
from tests.faults.answers import malformation
from tests.faults.scale import scaled
from transports.codec import DecodeLimits, decode_message, encode_message
from transports.errors import InvalidMessage, MessageTooLarge

# >= 10,000 examples in CI over the three properties; ten times that for a soak.
CODEC_EXAMPLES = scaled(ci=9_000, soak=90_000)
HTTP_EXAMPLES = scaled(ci=2_000, soak=20_000)
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LIMITS = DecodeLimits(max_message_bytes=8192, max_depth=16)

# -- a grammar of almost-right JSON-RPC ----------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**18, max_value=10**40)  # past int64 and double precision
    | st.floats()  # NaN and infinities included: json.dumps writes them as bare words
    | st.text(max_size=12)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
_ids = st.one_of(
    st.integers(),
    st.text(max_size=10),
    st.none(),
    st.booleans(),
    st.floats(),
    st.lists(st.integers(), max_size=2),
    st.integers(min_value=2**63, max_value=10**30),
)
_methods = st.sampled_from(
    [
        "initialize",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "logging/setLevel",
        "server/discover",
        "notifications/initialized",
        "notifications/cancelled",
        "no/such/method",
        "",
    ]
) | st.text(max_size=20)
_versions = st.sampled_from(["2025-11-25", "2025-06-18", "2026-07-28", "1999-01-01", ""])
_meta: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {},
    optional={
        "io.modelcontextprotocol/protocolVersion": _versions | st.integers(),
        "io.modelcontextprotocol/clientCapabilities": st.just({}) | json_values,
        "progressToken": st.text(max_size=6) | st.integers() | st.floats(),
    },
)
_tool_params = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["echo", "count", "overloaded", "nope"]) | json_values,
        "arguments": st.dictionaries(st.sampled_from(["text", "steps", "x"]), json_values)
        | json_values,
        "_meta": _meta | json_values,
    },
)
_initialize_params = st.fixed_dictionaries(
    {
        "protocolVersion": _versions | json_values,
        "capabilities": st.just({}) | json_values,
        "clientInfo": st.just({"name": "fuzz", "version": "1"}) | json_values,
    }
)


@st.composite
def messages(draw: st.DrawFn) -> Any:
    """A JSON value shaped like a JSON-RPC message, each part sometimes wrong."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)  # anything at all: arrays (batches), scalars, ...
    method = draw(_methods)
    message: dict[str, Any] = {}
    if draw(st.integers(0, 5)):
        message["jsonrpc"] = "2.0"
    elif draw(st.booleans()):
        message["jsonrpc"] = draw(json_values)
    if draw(st.integers(0, 4)):
        message["id"] = draw(_ids)
    if draw(st.integers(0, 6)):
        message["method"] = method
    params_of = {"tools/call": _tool_params, "initialize": _initialize_params}
    if draw(st.integers(0, 4)):
        message["params"] = draw(params_of.get(method, st.just({"_meta": {}})) | json_values)
    if not draw(st.integers(0, 9)):
        message[draw(st.sampled_from(["result", "error"]))] = draw(json_values)
    return message


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """The bytes a client might POST: a message, mangled text of one, or noise."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=200))
    text = json.dumps(draw(messages()))  # NaN/Infinity appear as bare words
    if kind == 1:  # cut short
        return text[: draw(st.integers(0, len(text)))].encode()
    if kind == 2:  # a key repeated (the SDK's parser would keep the last)
        return text.replace('"method"', '"method": "ping", "method"', 1).encode()
    if kind == 3:  # nested deeper than any limit
        depth = draw(st.integers(10, 3_000))
        return ("[" * depth + text + "]" * depth).encode()
    return text.encode()


# -- the codec -------------------------------------------------------------------------


def _decodes_to_itself_or_refuses(data: bytes) -> None:
    try:
        message = decode_message(data, LIMITS)
    except (InvalidMessage, MessageTooLarge):
        return
    again = encode_message(message)
    assert decode_message(again, LIMITS) == message


@settings(FUZZ, max_examples=CODEC_EXAMPLES // 2)
@given(bodies())
def test_the_codec_decodes_almost_right_messages_to_themselves_or_refuses_them(
    body: bytes,
) -> None:
    _decodes_to_itself_or_refuses(body)


@settings(FUZZ, max_examples=CODEC_EXAMPLES // 2)
@given(messages(), st.data())
def test_the_codec_survives_any_byte_of_a_message_changed(
    message: Any, data: st.DataObject
) -> None:
    raw = bytearray(json.dumps(message).encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw)))
        edit = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if edit == "insert" or not raw:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=3))
        elif edit == "delete":
            del raw[min(at, len(raw) - 1)]
        else:
            raw[min(at, len(raw) - 1)] ^= data.draw(st.integers(1, 255))
    _decodes_to_itself_or_refuses(bytes(raw))


# -- the gateway's HTTP handler, in process ------------------------------------------

_accepts = st.sampled_from(
    ["application/json, text/event-stream", "application/json", "text/event-stream", "*/*", ""]
)
_content_types = st.sampled_from(["application/json", "text/plain", "", "application/json; x=1"])
_header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=24
)


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes]:
    """(HTTP method, path, headers, body): mostly POSTs to /mcp, each header sometimes odd."""
    verb = draw(st.sampled_from(["POST"] * 8 + ["GET", "DELETE", "PUT", "OPTIONS"]))
    path = draw(st.sampled_from(["/mcp"] * 9 + ["/mcp/", "/", "/other"]))
    headers = {
        "host": draw(st.sampled_from(["127.0.0.1:8765"] * 9 + ["evil.example"])),
        "accept": draw(_accepts | _header_text),
        "content-type": draw(_content_types | _header_text),
    }
    optional = {
        "mcp-protocol-version": _versions | _header_text,
        "mcp-session-id": _header_text,
        "mcp-method": _methods.filter(lambda m: m.isascii() and m.isprintable()) | _header_text,
        "mcp-name": st.sampled_from(["echo", "count", "nope"]) | _header_text,
        "origin": st.sampled_from(["http://127.0.0.1:8765", "http://evil.example", "null"]),
        "mcp-param-text": _header_text,
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            headers[name] = draw(values).strip()
    body = draw(bodies()) if verb == "POST" else b""
    return verb, path, headers, body


class _Errors(logging.Handler):
    """Every record at ERROR or above, or carrying a traceback, anywhere in the process."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)


@contextmanager
def _errors_logged() -> Iterator[_Errors]:
    handler = _Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    """Runs the app's ASGI lifespan (the SDK's session manager) around the block."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        async with asyncio.timeout(30):
            await outbox.get()
            await task


def test_every_fuzzed_http_request_gets_a_well_formed_answer() -> None:
    bus = fake_bus()
    del bus.tools["count"]  # listed, but its steps loop is not for fuzzed arguments
    gateway = Gateway(bus, policy=None)
    config = parse_config({"name": "fuzz", "pools": [{"name": "p", "tools": "x:y"}]})
    app = http_app(gateway, config, 8765)
    with asyncio.Runner() as runner, _errors_logged() as errors:
        lifespan = _lifespan(app)
        runner.run(lifespan.__aenter__())
        # raise_app_exceptions: an exception escaping the app fails the example.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765")

        async def exchange(request: tuple[str, str, dict[str, str], bytes]) -> httpx.Response:
            verb, path, headers, body = request
            async with asyncio.timeout(10):
                return await client.request(verb, path, headers=headers, content=body)

        @settings(FUZZ, max_examples=HTTP_EXAMPLES)
        @given(http_requests())
        def answered_well(request: tuple[str, str, dict[str, str], bytes]) -> None:
            seen = len(errors.records)
            response = runner.run(exchange(request))
            kind = response.headers.get("content-type", "")
            problem = malformation(response.status_code, kind, response.content)
            assert problem is None, f"{request!r} -> {problem}"
            assert len(errors.records) == seen, errors.records[seen:]

        try:
            answered_well()
        finally:
            runner.run(client.aclose())
            runner.run(lifespan.__aexit__(None, None, None))
            assert gateway.audit.close()
