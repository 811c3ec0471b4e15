"""Multi-round-trip fixtures (SEP-2322, MCP 2026-07-28) for the conformance server.

In the 2026-07-28 era a server does not send sampling, elicitation or roots requests to the
client mid-call. It answers the call with an ``InputRequiredResult`` naming the inputs it
needs (and optionally an opaque ``requestState``); the client fulfils them and retries the
same call carrying ``inputResponses`` and the echoed state. Every handler here is therefore
a pure function of its request: all it knows comes from ``ctx.input_responses`` and
``ctx.request_state``, so any replica may serve any round. The SDK seals ``requestState``
on the way out and verifies it on the way back (see ``conformance.build_server``); the
handlers only ever see the plaintext they minted.
"""

from __future__ import annotations

import json

from mcp.server.mcpserver import Context, MCPServer, UserMessage
from mcp_types import (
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    InputRequest,
    InputRequiredResult,
    InputResponse,
    ListRootsRequest,
    ListRootsResult,
    SamplingMessage,
    TextContent,
)

__all__ = ["register_input_required_fixtures"]


def _form(message: str, field: str, field_type: str = "string") -> ElicitRequest:
    """A form elicitation asking for one required field."""
    schema = {"type": "object", "properties": {field: {"type": field_type}}, "required": [field]}
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def _sample(prompt: str, max_tokens: int) -> CreateMessageRequest:
    """A sampling request with a single user message."""
    message = SamplingMessage(role="user", content=TextContent(type="text", text=prompt))
    return CreateMessageRequest(
        params=CreateMessageRequestParams(messages=[message], max_tokens=max_tokens)
    )


def _field(answer: InputResponse | None, field: str) -> object:
    """One field of an accepted form elicitation, or ``None``."""
    if isinstance(answer, ElicitResult) and answer.content:
        return answer.content.get(field)
    return None


def _sampled_text(answer: InputResponse | None) -> str | None:
    if isinstance(answer, CreateMessageResult) and isinstance(answer.content, TextContent):
        return answer.content.text
    return None


def register_input_required_fixtures(server: MCPServer) -> None:
    """Add the ``test_input_required_result_*`` tools and prompt to ``server``."""

    @server.tool()
    async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
        """Asks the user's name through one elicitation, then greets them."""
        answers = ctx.input_responses or {}
        if "user_name" in answers:
            return f"Hello, {_field(answers['user_name'], 'name') or 'stranger'}!"
        return InputRequiredResult(
            input_requests={"user_name": _form("What is your name?", "name")}
        )

    @server.tool()
    async def test_streaming_elicitation(ctx: Context) -> str | InputRequiredResult:
        """Needs a confirmation: on a request stream the server may only answer with an
        input_required result, never with an independent elicitation request."""
        answers = ctx.input_responses or {}
        if "confirm" in answers:
            return f"confirmed: {_field(answers['confirm'], 'ok')}"
        return InputRequiredResult(input_requests={"confirm": _form("Proceed?", "ok", "boolean")})

    @server.tool()
    async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
        """Asks the client's model one question through sampling."""
        answers = ctx.input_responses or {}
        if "capital_question" in answers:
            return f"Model said: {_sampled_text(answers['capital_question']) or '?'}"
        question = _sample("What is the capital of France?", 100)
        return InputRequiredResult(input_requests={"capital_question": question})

    @server.tool()
    async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
        """Asks for the client's roots and reports how many there are."""
        answers = ctx.input_responses or {}
        if "client_roots" in answers:
            roots = answers["client_roots"]
            count = len(roots.roots) if isinstance(roots, ListRootsResult) else 0
            return f"Client exposed {count} root(s)."
        return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})

    @server.tool()
    async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
        """Completes only when the confirmation arrives with the state it was asked with."""
        answers = ctx.input_responses or {}
        if "confirm" in answers and ctx.request_state == "request-state-nonce":
            return "state-ok: confirmation received"
        return InputRequiredResult(
            input_requests={"confirm": _form("Please confirm", "ok", "boolean")},
            request_state="request-state-nonce",
        )

    @server.tool()
    async def test_input_required_result_multiple_inputs(
        ctx: Context,
    ) -> str | InputRequiredResult:
        """Asks for an elicitation, a sampling and the roots in one round."""
        answers = ctx.input_responses or {}
        if {"user_name", "greeting", "client_roots"} <= answers.keys():
            return "All inputs received."
        return InputRequiredResult(
            input_requests={
                "user_name": _form("What is your name?", "name"),
                "greeting": _sample("Generate a greeting", 50),
                "client_roots": ListRootsRequest(),
            },
            request_state="multiple-inputs",
        )

    @server.tool()
    async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
        """Three rounds (name, then colour, then the answer) carried in evolving state."""
        state = json.loads(ctx.request_state) if ctx.request_state else {"round": 0}
        answers = ctx.input_responses or {}
        if state.get("round") == 1 and "step1" in answers:
            return InputRequiredResult(
                input_requests={"step2": _form("Step 2: What is your favorite color?", "color")},
                request_state=json.dumps({"round": 2, "name": _field(answers["step1"], "name")}),
            )
        if state.get("round") == 2 and "step2" in answers:
            return f"{state.get('name')} likes {_field(answers['step2'], 'color')}."
        # First round, or an answer out of order: start over.
        return InputRequiredResult(
            input_requests={"step1": _form("Step 1: What is your name?", "name")},
            request_state=json.dumps({"round": 1}),
        )

    @server.tool()
    async def test_input_required_result_tampered_state(ctx: Context) -> str | InputRequiredResult:
        """Echoes its state back; a tampered echo never reaches here (the SDK rejects it)."""
        if ctx.request_state is None:
            return InputRequiredResult(
                input_requests={"confirm": _form("Please confirm", "ok", "boolean")},
                request_state="round-1",
            )
        return f"state-ok: {ctx.request_state}"

    @server.tool()
    async def test_input_required_result_capabilities(ctx: Context) -> InputRequiredResult:
        """Asks only for the kinds of input the client declared it can provide."""
        caps = ctx.client_capabilities
        requests: dict[str, InputRequest] = {}
        if caps is None or caps.sampling is not None:
            requests["sample"] = _sample("Say hello", 50)
        if caps is None or caps.elicitation is not None:
            requests["ask"] = _form("What is your name?", "name")
        return InputRequiredResult(input_requests=requests, request_state="capability-gated")

    @server.prompt()
    async def test_input_required_result_prompt(
        ctx: Context,
    ) -> list[UserMessage] | InputRequiredResult:
        """A prompt that first asks which context to use (input_required on prompts/get)."""
        answers = ctx.input_responses or {}
        if "user_context" in answers:
            text = _field(answers["user_context"], "context") or "?"
            content = TextContent(type="text", text=f"Use the following context: {text}")
            return [UserMessage(role="user", content=content)]
        ask = _form("What context should the prompt use?", "context")
        return InputRequiredResult(input_requests={"user_context": ask})
