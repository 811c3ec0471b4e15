"""Allow-lists cover every method family and deny by default once set."""

from __future__ import annotations

import pytest

from cluster.gateway.policy.allowlist import AllowList, Kind

ALLOW = AllowList(
    {
        "bob": ["echo"],
        "carol": ["tool:add", "prompt:summarize", "resource:kit://greeting"],
        "dave": ["resource:kit://items/{id}", "prompt:*"],
        "root": ["*"],
    }
)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("resources/read", {"uri": "kit://greeting"}),
        ("resources/subscribe", {"uri": "kit://greeting"}),
        ("resources/unsubscribe", {"uri": "kit://greeting"}),
        ("prompts/get", {"name": "summarize"}),
        ("completion/complete", {"ref": {"type": "ref/prompt", "name": "summarize"}}),
        ("completion/complete", {"ref": {"type": "ref/resource", "uri": "kit://items/{id}"}}),
        ("tools/call", {"name": "add"}),
        ("some/future-method", {}),
    ],
)
def test_a_principal_allowed_one_tool_may_use_nothing_else(
    method: str, params: dict[str, object]
) -> None:
    assert not ALLOW.permits("bob", method, params)
    assert ALLOW.permits("bob", "tools/call", {"name": "echo"})


@pytest.mark.parametrize("method", ["tasks/get", "tasks/result", "tasks/cancel", "tasks/list"])
def test_task_methods_stay_open_because_the_store_answers_only_a_tasks_creator(
    method: str,
) -> None:
    # A task can only be created by a tools/call the allow-list permitted; the store
    # binds it to its creator and answers anyone else "task not found".
    assert ALLOW.permits("bob", method, {"taskId": "1"})
    assert ALLOW.permits("nobody", method, {})


def test_protocol_plumbing_and_lists_stay_open() -> None:
    for method in ("initialize", "ping", "logging/setLevel", "tools/list", "resources/list"):
        assert ALLOW.permits("bob", method, {})
        assert ALLOW.permits("stranger", method, {})


def test_prompts_and_resources_are_allowed_by_name_uri_or_template() -> None:
    assert ALLOW.permits("carol", "prompts/get", {"name": "summarize"})
    assert not ALLOW.permits("carol", "prompts/get", {"name": "other"})
    assert ALLOW.permits("carol", "resources/read", {"uri": "kit://greeting"})
    assert not ALLOW.permits("carol", "resources/read", {"uri": "kit://greeting2"})
    assert ALLOW.permits("dave", "resources/read", {"uri": "kit://items/7"})
    assert not ALLOW.permits("dave", "resources/read", {"uri": "kit://items/7/secret"})
    assert ALLOW.permits("dave", "prompts/get", {"name": "anything"})
    assert not ALLOW.permits("dave", "tools/call", {"name": "echo"})
    ref = {"type": "ref/resource", "uri": "kit://items/{id}"}
    assert ALLOW.permits("dave", "completion/complete", {"ref": ref})


def test_list_items_are_filtered_by_kind() -> None:
    assert ALLOW.permits_item("carol", Kind.TOOL, "add")
    assert not ALLOW.permits_item("carol", Kind.TOOL, "summarize")  # a prompt, not a tool
    assert ALLOW.permits_item("dave", Kind.RESOURCE_TEMPLATE, "kit://items/{id}")
    assert not ALLOW.permits_item("carol", Kind.RESOURCE_TEMPLATE, "kit://items/{id}")
    assert ALLOW.permits_item("root", Kind.RESOURCE, "x://y")


def test_an_unknown_principal_and_a_nameless_request_are_denied() -> None:
    assert not ALLOW.permits("stranger", "tools/call", {"name": "echo"})
    assert not ALLOW.permits("root", "tools/call", {})


def test_without_allow_lists_everything_is_allowed() -> None:
    assert AllowList(None).permits("anyone", "resources/read", {"uri": "x://y"})
    assert AllowList(None).permits_item("anyone", Kind.PROMPT, "p")


def test_listening_to_a_resource_needs_the_resource() -> None:
    def listen(*uris: object) -> dict[str, object]:
        return {"notifications": {"toolsListChanged": True, "resourceSubscriptions": list(uris)}}

    # List changes are open to anyone a list is open to; resource updates are not.
    assert ALLOW.permits(
        "bob", "subscriptions/listen", {"notifications": {"toolsListChanged": True}}
    )
    assert ALLOW.permits("stranger", "subscriptions/listen", listen())
    assert not ALLOW.permits("bob", "subscriptions/listen", listen("kit://greeting"))
    assert ALLOW.permits("carol", "subscriptions/listen", listen("kit://greeting"))
    assert not ALLOW.permits("carol", "subscriptions/listen", listen("kit://greeting", "kit://x"))
    assert ALLOW.permits("dave", "subscriptions/listen", listen("kit://items/7"))
    assert not ALLOW.permits("dave", "subscriptions/listen", listen(7))
    snake = {"notifications": {"resource_subscriptions": ["kit://greeting"]}}
    assert not ALLOW.permits("bob", "subscriptions/listen", snake)
