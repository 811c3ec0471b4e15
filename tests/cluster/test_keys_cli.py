"""``raybus keys``: each rotation step from its own process on a running encrypted bus,
every refusal one line; keys only ever from the environment."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.cli import main

RAYBUS = [sys.executable, "-m", "cluster.cli"]
KEY = base64.b64encode(os.urandom(32)).decode()


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("raybus: ")
    return lines[0]


# -- refused before joining any cluster (no Ray) ---------------------------------------


@pytest.mark.parametrize(
    ("arguments", "environment", "said"),
    [
        (["k2"], {}, "environment variable RAYBUS_KEY_K2 is not set"),
        (["k2", "--from-env", "MY_KEY"], {"MY_KEY": "not base64!"}, "MY_KEY: the key is not"),
        (
            ["k2", "--from-env", "MY_KEY"],
            {"MY_KEY": base64.b64encode(b"16 bytes, short.").decode()},
            "MY_KEY: the key must be 32 bytes (got 16)",
        ),
        (
            ["k2", "--secret-env", "MY_SECRET"],
            {"MY_SECRET": "correct horse battery staple"},
            "MY_SECRET: the secret must be at least 32 bytes",
        ),
        (["k2", "--salt", "s"], {"RAYBUS_KEY_K2": KEY}, "--salt goes with --secret-env"),
    ],
)
def test_add_refuses_a_missing_or_weak_key_in_one_line_before_joining_ray(
    arguments: list[str],
    environment: dict[str, str],
    said: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("RAYBUS_KEY_K2", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(["keys", "add", "somebus", *arguments, "--address", "127.0.0.1:1"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert said in line
    for value in environment.values():
        assert value not in line  # a key or secret is never echoed


# -- on a running bus ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    head = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.ray_head"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert head.stdout is not None
    assert head.stdin is not None
    address = head.stdout.readline().strip()
    try:
        assert address, "the Ray head did not start"
        yield address
    finally:
        head.stdin.close()
        head.wait(timeout=60)


def _raybus(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RAYBUS, *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.kafka
def test_a_rotation_step_by_step_from_the_command_line(
    ray_address: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    config = tmp_path / "bus.yaml"
    config.write_text(
        "name: keystest\nbackend: kafka\n"
        f"kafka: {{bootstrap: '{kafka_bootstrap}', topic_prefix: 'keys-{os.urandom(4).hex()}.'}}\n"
        "encryption: {key_id: k1, keys: {k1: '${RAYBUS_KEY_K1}'}}\n"
        "pools:\n  - name: kit\n    server: 'cluster.examples.testkit:server'\n"
    )
    at = ("--address", ray_address)
    started = _raybus("start", str(config), *at, env={"RAYBUS_KEY_K1": KEY})
    assert started.returncode == 0, started.stderr
    try:
        listed = _raybus("keys", "list", "keystest", "--json", *at)
        assert listed.returncode == 0, listed.stderr
        keys = json.loads(listed.stdout)
        assert (keys["current"], keys["keys"], keys["retired"]) == ("k1", ["k1"], [])
        assert keys["members"], keys  # the worker (and the discovery reader) follow
        assert KEY not in listed.stdout

        unknown = _raybus("keys", "promote", "keystest", "k9", *at)
        assert unknown.returncode == 1
        assert "no key 'k9' in the keyring (keys: k1)" in _one_line(unknown.stderr)
        sealing = _raybus("keys", "retire", "keystest", "k1", *at)
        assert sealing.returncode == 1
        assert "promote another key" in _one_line(sealing.stderr)

        new_key = base64.b64encode(os.urandom(32)).decode()
        added = _raybus("keys", "add", "keystest", "k2", *at, env={"RAYBUS_KEY_K2": new_key})
        assert added.returncode == 0, added.stderr
        assert "key 'k2' added" in added.stdout
        assert _raybus("keys", "promote", "keystest", "k2", *at).returncode == 0
        retired = _raybus("keys", "retire", "keystest", "k1", "--drain", "1", *at)
        assert retired.returncode == 0, retired.stderr
        called = _raybus("call", "keystest", "echo", '{"text": "after k1"}', *at)
        assert called.returncode == 0, called.stderr
        assert json.loads(called.stdout)["structuredContent"] == {"result": "after k1"}

        shown = _raybus("keys", "list", "keystest", *at)
        assert shown.returncode == 0, shown.stderr
        assert "k2              seals" in shown.stdout
        assert "retired: k1" in shown.stdout
        reused = _raybus("keys", "add", "keystest", "k1", *at, env={"RAYBUS_KEY_K1": KEY})
        assert reused.returncode == 1
        assert "was retired; ids are never reused" in _one_line(reused.stderr)
    finally:
        _raybus("stop", "keystest", *at)
    gone = _raybus("keys", "list", "keystest", *at)
    assert gone.returncode == 1
    assert "has no keys to rotate" in _one_line(gone.stderr)
