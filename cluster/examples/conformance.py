"""The fixture server the official MCP conformance suite expects, on the official SDK.

The suite (npm ``@modelcontextprotocol/conformance``, run by ``tests/conformance/runner.py``)
connects to a server as a client and calls fixture tools, prompts and resources by name
(``test_simple_text``, ``test_tool_with_progress``, ``test://static-text``, ...). This
module provides all of them (the same names as the SDK's own ``everything-server``, which
a test checks), so raybus can run the suite twice: against this server served
directly over Streamable HTTP (the baseline), and against the bus gateway forwarding to
workers that host it (``cluster.examples.conformance:server``).

Hosting behind the bus shapes the code:

* Behaviour is request-scoped. Nothing a later request depends on lives in this process:
  resource subscriptions and the logging level are acknowledged, not stored, and the
  tool/prompt list-change hooks add and remove their dynamic entry within one synchronous
  step, so every replica always lists the same things.
* The 2026-07-28 multi-round-trip fixtures (``conformance_inputs``) keep their state in
  the client-echoed ``requestState``, which the SDK seals with a key read from
  ``RAYBUS_REQUEST_STATE_SECRET`` in ``build_server``; replicas sharing the secret (and the
  server name, the token audience) accept each other's state.
* Notifications, sampling and elicitation go through the SDK's ``Context`` (progress,
  log messages and server-to-client requests tied to the originating request with
  ``related_request_id``), which is what lets a gateway route them back to the right caller.

Run directly: ``python -m cluster.examples.conformance [PORT]`` serves
``http://127.0.0.1:PORT/mcp`` (default port 8766).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
from typing import Annotated, Any

from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.mcpserver import (
    AcceptedElicitation,
    Context,
    MCPServer,
    RequestStateSecurity,
    UserMessage,
)
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import Prompt
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp_types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, Field

from cluster.examples.conformance_inputs import register_input_required_fixtures
from cluster.gateway.event_store import BoundedEventStore

__all__ = ["REQUEST_STATE_SECRET_ENV", "SERVER_NAME", "build_server", "main", "server"]

logger = logging.getLogger(__name__)

SERVER_NAME = "raybus-conformance"
"""Also the audience of sealed ``requestState``: replicas must share it."""

REQUEST_STATE_SECRET_ENV = "RAYBUS_REQUEST_STATE_SECRET"

# Dev-only fallback so the example runs out of the box. It is public, so anyone can forge
# request state for a server using it; real deployments set RAYBUS_REQUEST_STATE_SECRET
# (at least 32 bytes) to the same value on every replica.
_DEV_REQUEST_STATE_SECRET = "raybus-conformance-dev-only-request-state-secret"

# A 1x1 PNG and a tiny WAV: the suite checks the content type, not the pixels.
_PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4"  # split only to fit the line length
    "2mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
_WAV_BASE64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

_STEP_PAUSE_S = 0.05
"""Spacing between notifications, so the client sees them as separate events."""

# SEP-1613 / SEP-2106: tools/list must hand JSON Schema 2020-12 keywords through untouched.
_JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


class _UserResponse(BaseModel):
    """The form ``test_elicitation`` asks for (the suite's spec names the fields)."""

    username: str = Field(description="User's response")
    email: str = Field(description="User's email address")


class _DefaultsForm(BaseModel):
    """SEP-1034: a default for every primitive type."""

    name: str = Field(default="John Doe", description="User name")
    age: int = Field(default=30, description="User age")
    score: float = Field(default=95.5, description="User score")
    status: str = Field(
        default="active",
        description="User status",
        json_schema_extra={"enum": ["active", "inactive", "pending"]},
    )
    verified: bool = Field(default=True, description="Verification status")


class _EnumsForm(BaseModel):
    """SEP-1330: every enum schema variant (titled/untitled, single/multi, legacy)."""

    untitledSingle: str = Field(
        description="Simple enum without titles",
        json_schema_extra={"enum": ["active", "inactive", "pending"]},
    )
    titledSingle: str = Field(
        description="Enum with titled options (oneOf)",
        json_schema_extra={
            "oneOf": [
                {"const": "low", "title": "Low Priority"},
                {"const": "medium", "title": "Medium Priority"},
                {"const": "high", "title": "High Priority"},
            ]
        },
    )
    untitledMulti: list[str] = Field(
        description="Multi-select without titles",
        json_schema_extra={"items": {"type": "string", "enum": ["read", "write", "execute"]}},
    )
    titledMulti: list[str] = Field(
        description="Multi-select with titled options",
        json_schema_extra={
            "items": {
                "anyOf": [
                    {"const": "feature", "title": "New Feature"},
                    {"const": "bug", "title": "Bug Fix"},
                    {"const": "docs", "title": "Documentation"},
                ]
            }
        },
    )
    legacyEnum: str = Field(
        description="Legacy enum with enumNames",
        json_schema_extra={
            "enum": ["small", "medium", "large"],
            "enumNames": ["Small Size", "Medium Size", "Large Size"],
        },
    )


def _json_schema_2020_12_tool() -> str:
    """Tests JSON Schema 2020-12 keyword preservation in tools/list."""
    return "json_schema_2020_12_tool"


def _dynamic_entry() -> str:
    """Exists only for an instant while a list-change hook runs."""
    return "dynamic"


def _image() -> ImageContent:
    return ImageContent(type="image", data=_PNG_BASE64, mime_type="image/png")


def _text(text: str) -> TextContent:
    return TextContent(type="text", text=text)


def _embedded(uri: str, text: str, mime_type: str = "text/plain") -> EmbeddedResource:
    contents = TextResourceContents(uri=uri, mime_type=mime_type, text=text)
    return EmbeddedResource(type="resource", resource=contents)


def _register_content_tools(server: MCPServer) -> None:
    """Tools whose results exercise each content block type, and a failing tool."""

    @server.tool()
    def test_simple_text() -> str:
        """Returns a single text block."""
        return "This is a simple text response for testing."

    @server.tool()
    def test_image_content() -> list[ImageContent]:
        """Returns a PNG image block."""
        return [_image()]

    @server.tool()
    def test_audio_content() -> list[AudioContent]:
        """Returns a WAV audio block."""
        return [AudioContent(type="audio", data=_WAV_BASE64, mime_type="audio/wav")]

    @server.tool()
    def test_embedded_resource() -> list[EmbeddedResource]:
        """Returns an embedded text resource."""
        return [_embedded("test://embedded-resource", "This is an embedded resource content.")]

    @server.tool()
    def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
        """Returns text, image and embedded resource blocks together."""
        data = json.dumps({"test": "data", "value": 123})
        return [
            _text("Multiple content types test:"),
            _image(),
            _embedded("test://mixed-content-resource", data, "application/json"),
        ]

    @server.tool()
    def test_error_handling() -> str:
        """Always fails, so the caller sees a tool result with isError set.

        Raises:
            ToolError: Always; MCPServer turns it into ``isError`` with this message as text.
        """
        raise ToolError("This tool intentionally returns an error for testing")

    @server.tool()
    def test_x_mcp_header(
        region: Annotated[
            str,
            Field(
                description="Mirrored into the Mcp-Param-Region header",
                json_schema_extra={"x-mcp-header": "Region"},
            ),
        ] = "<none>",
    ) -> str:
        """Has an argument mirrored into an HTTP header (SEP-2243 Mcp-Param-* validation)."""
        return f"region={region}"


def _register_notifying_tools(server: MCPServer) -> None:
    """Tools that notify the caller while running: logs, progress, list changes, SSE close."""

    @server.tool()
    async def test_tool_with_logging(ctx: Context) -> str:
        """Sends three info log messages while running."""
        for step in ("Tool execution started", "Tool processing data"):
            await ctx.info(step)
            await asyncio.sleep(_STEP_PAUSE_S)
        await ctx.info("Tool execution completed")
        return "Tool with logging executed successfully"

    @server.tool()
    async def test_logging_tool(ctx: Context) -> str:
        """Logs once at info: a 2026-07-28 caller that set no logLevel must not see it."""
        await ctx.info("test_logging_tool ran")
        return "logged"

    @server.tool()
    async def test_tool_with_progress(ctx: Context) -> str:
        """Reports progress 0, 50 and 100 of 100, then returns the caller's progress token."""
        for done in (0, 50, 100):
            if done:
                await asyncio.sleep(_STEP_PAUSE_S)
            await ctx.report_progress(done, 100, f"Completed step {done} of 100")
        meta = ctx.request_context.meta
        return str(meta.get("progress_token", 0) if meta else 0)

    @server.tool()
    async def test_reconnection(ctx: Context) -> str:
        """Closes its SSE stream mid-call; the client resumes it (SEP-1699)."""
        await ctx.info("Before disconnect")
        await ctx.close_sse_stream()
        # Give the client time to reconnect before the next event is due.
        await asyncio.sleep(0.2)
        await ctx.info("After reconnect")
        return "Reconnection test completed"

    @server.tool()
    async def test_trigger_tool_change(ctx: Context) -> str:
        """Changes the tool list and announces it to subscriptions/listen streams (SEP-2575)."""
        # No await between add and remove: no other request ever lists the dynamic tool.
        server.add_tool(_dynamic_entry, name="test_dynamic_tool")
        server.remove_tool("test_dynamic_tool")
        await ctx.notify_tools_changed()
        return "tool list changed"

    @server.tool()
    async def test_trigger_prompt_change(ctx: Context) -> str:
        """Changes the prompt list and announces it to subscriptions/listen streams (SEP-2575)."""
        prompt = Prompt.from_function(
            _dynamic_entry, name="test_dynamic_prompt", description="dynamic"
        )
        server.add_prompt(prompt)
        server.remove_prompt("test_dynamic_prompt")
        await ctx.notify_prompts_changed()
        return "prompt list changed"


def _register_client_request_tools(server: MCPServer) -> None:
    """Tools that ask the client for something mid-call (2025-11-25 era server requests)."""

    @server.tool()
    async def test_sampling(prompt: str, ctx: Context) -> str:
        """Asks the client's model to complete ``prompt``."""
        # related_request_id routes the request over this call's stream; without it the
        # request goes to the standalone GET stream, which may not be open.
        result = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=_text(prompt))],
            max_tokens=100,
            related_request_id=ctx.request_id,
        )
        content = result.content
        answer = content.text if isinstance(content, TextContent) else "No response"
        return f"LLM response: {answer}"

    @server.tool()
    async def test_elicitation(message: str, ctx: Context) -> str:
        """Asks the user for a free-text response."""
        result = await ctx.elicit(message=message, schema=_UserResponse)
        content = result.data.model_dump_json() if isinstance(result, AcceptedElicitation) else "{}"
        return f"User response: action={result.action}, content={content}"

    @server.tool()
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        """Elicits a form with a default for every primitive type (SEP-1034)."""
        result = await ctx.elicit(message="Please provide user information", schema=_DefaultsForm)
        content = result.data.model_dump_json() if isinstance(result, AcceptedElicitation) else "{}"
        return f"Elicitation result: action={result.action}, content={content}"

    @server.tool()
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        """Elicits a form with every enum schema variant (SEP-1330)."""
        result = await ctx.elicit(
            message="Please select values using different enum schema types", schema=_EnumsForm
        )
        content = result.data.model_dump_json() if isinstance(result, AcceptedElicitation) else "{}"
        return f"Elicitation completed: action={result.action}, content={content}"

    @server.tool()
    async def test_missing_capability(ctx: Context) -> str:
        """Needs the client's sampling capability; without it fails at the protocol level.

        Raises:
            MCPError: ``MISSING_REQUIRED_CLIENT_CAPABILITY`` with ``data.requiredCapabilities``,
                which tool dispatch passes through as a JSON-RPC error (not ``isError``).
        """
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.sampling is None:
            raise MCPError(
                code=MISSING_REQUIRED_CLIENT_CAPABILITY,
                message="This tool requires the client 'sampling' capability",
                data={"requiredCapabilities": {"sampling": {}}},
            )
        return "Client declared sampling capability; proceeding."


def _register_resources(server: MCPServer) -> None:
    @server.resource("test://static-text", mime_type="text/plain")
    def static_text_resource() -> str:
        """A static text resource."""
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", mime_type="image/png")
    def static_binary_resource() -> bytes:
        """A static binary resource (a PNG image)."""
        return base64.b64decode(_PNG_BASE64)

    @server.resource("test://template/{id}/data", mime_type="application/json")
    def template_resource(id: str) -> str:
        """A resource template substituting ``id``."""
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.resource("test://watched-resource", mime_type="text/plain")
    def watched_resource() -> str:
        """A resource clients may subscribe to."""
        return "Watched resource content"


def _register_prompts(server: MCPServer) -> None:
    @server.prompt()
    def test_simple_prompt() -> list[UserMessage]:
        """A prompt without arguments."""
        return [UserMessage(role="user", content=_text("This is a simple prompt for testing."))]

    @server.prompt()
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
        """A prompt with two required arguments."""
        text = f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
        return [UserMessage(role="user", content=_text(text))]

    @server.prompt()
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
        """A prompt embedding the resource named by ``resourceUri``."""
        return [
            UserMessage(
                role="user",
                content=_embedded(resourceUri, "Embedded resource content for testing."),
            ),
            UserMessage(role="user", content=_text("Please process the embedded resource above.")),
        ]

    @server.prompt()
    def test_prompt_with_image() -> list[UserMessage]:
        """A prompt carrying an image."""
        return [
            UserMessage(role="user", content=_image()),
            UserMessage(role="user", content=_text("Please analyze the image above.")),
        ]


def _register_protocol_handlers(lowlevel: Server[Any]) -> None:
    """Methods MCPServer has no decorator for: subscriptions, log level, completion.

    All three answer without keeping state, so any replica can take any request. The
    suite checks that they are served; it does not publish resource updates.
    """

    async def set_logging_level(
        ctx: ServerRequestContext[Any], params: SetLevelRequestParams
    ) -> EmptyResult:
        logger.debug("client asked for log level %s", params.level)
        return EmptyResult()

    async def subscribe(
        ctx: ServerRequestContext[Any], params: SubscribeRequestParams
    ) -> EmptyResult:
        logger.debug("client subscribed to %s", params.uri)
        return EmptyResult()

    async def unsubscribe(
        ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        logger.debug("client unsubscribed from %s", params.uri)
        return EmptyResult()

    async def complete(
        ctx: ServerRequestContext[Any], params: CompleteRequestParams
    ) -> CompleteResult:
        # Declaring the capability and answering well-formed is all the suite asks.
        return CompleteResult(completion=Completion(values=[], total=0, has_more=False))

    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_logging_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    lowlevel.add_request_handler("completion/complete", CompleteRequestParams, complete)


def build_server() -> MCPServer:
    """Build the conformance fixture server.

    Reads ``RAYBUS_REQUEST_STATE_SECRET`` (falling back to a public dev secret): the key
    that seals the 2026-07-28 ``requestState``. Every replica of a deployment must use the
    same secret, or a retry landing on another replica is rejected as invalid state.

    Raises:
        ValueError: The secret is shorter than the 32 bytes the SDK requires.
    """
    secret = os.environ.get(REQUEST_STATE_SECRET_ENV) or _DEV_REQUEST_STATE_SECRET
    schema_tool = Tool.from_function(_json_schema_2020_12_tool, name="json_schema_2020_12_tool")
    # MCPServer derives input schemas from signatures; this fixture is about the schema
    # itself, so install it verbatim.
    schema_tool = schema_tool.model_copy(update={"parameters": _JSON_SCHEMA_2020_12})
    server = MCPServer(
        name=SERVER_NAME,
        version="0.1.0",
        tools=[schema_tool],
        request_state_security=RequestStateSecurity(keys=[secret]),
    )
    _register_content_tools(server)
    _register_notifying_tools(server)
    _register_client_request_tools(server)
    register_input_required_fixtures(server)
    _register_resources(server)
    _register_prompts(server)
    # MCPServer exposes no public hook for these spec methods (as in the SDK's own
    # everything-server); the lowlevel Server underneath serves them.
    _register_protocol_handlers(server._lowlevel_server)
    return server


server = build_server()


def main(argv: list[str] | None = None) -> None:
    """Serve ``server`` over Streamable HTTP at ``http://127.0.0.1:PORT/mcp``."""
    args = sys.argv[1:] if argv is None else argv
    port = int(args[0]) if args else 8766
    logging.basicConfig(level=logging.INFO)
    server.run(
        "streamable-http",
        host="127.0.0.1",
        port=port,
        streamable_http_path="/mcp",
        event_store=BoundedEventStore(),
        # Milliseconds; a short retry keeps the SSE-resumption scenarios fast.
        retry_interval=100,
    )


if __name__ == "__main__":
    main()
