"""`raybus config check FILE`: every problem on its own line, led by its field path; no Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cluster.cli import main

GOOD = f"""
name: good
pools:
  - name: kit
    server: "cluster.examples.testkit:server"
  - name: calc
    command: ["{sys.executable}", "-m", "cluster.examples.calculator"]
  - name: geometry
    tools: "cluster.examples.functions"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def check(path: Path, *extra: str, cwd: Path | None = None) -> tuple[int, list[str], str]:
    """Run the check as a user does, in a process of its own; (exit code, stdout lines,
    stderr). The timeout only stops a hang: the check itself bounds every load."""
    completed = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "config", "check", str(path), *extra],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=cwd,
    )
    return completed.returncode, completed.stdout.splitlines(), completed.stderr


def test_a_good_file_is_one_ok_line(tmp_path: Path) -> None:
    code, lines, _ = check(write(tmp_path / "bus.yaml", GOOD))
    assert (code, lines) == (0, ["ok: bus 'good', 3 pools"])


def test_checking_starts_no_ray_and_imports_no_server_into_its_process(tmp_path: Path) -> None:
    config = write(tmp_path / "bus.yaml", GOOD)
    ray_dir = tmp_path / "ray-tmp"  # where any Ray started on this machine keeps its session
    ray_dir.mkdir()
    driver = textwrap.dedent(
        f"""
        import json, os, sys
        import ray
        from cluster.cli import main
        code = main(["config", "check", {str(config)!r}])
        children = []
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{{entry}}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == os.getpid():
                children.append(entry)
        print(json.dumps({{
            "code": code,
            "ray_initialized": ray.is_initialized(),
            "children": children,
            "server_imported": "cluster.examples.testkit" in sys.modules,
        }}))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", driver],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "RAY_TMPDIR": str(ray_dir)},
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.splitlines()[-1])
    assert report == {
        "code": 0,
        "ray_initialized": False,
        "children": [],  # no raylet, no GCS, no loader left behind
        "server_imported": False,  # loaded in a child process only
    }
    assert list(ray_dir.iterdir()) == []  # no Ray session was ever created


def test_schema_errors_and_unloadable_pools_are_each_one_line_led_by_their_path(
    tmp_path: Path,
) -> None:
    config = write(
        tmp_path / "bus.yaml",
        """
        name: bad
        pools:
          - name: kit
            server: "cluster.examples.testkitt:server"
          - name: fns
            tools: "cluster.examples.functions"
            min_workers: -1
          - name: calc
            command: ["raybus-no-such-command", "--serve"]
          - name: extra
            server: "cluster.examples.testkit:server"
            colour: red
        router:
          max_pending_per_pool: zero
        """,
    )
    code, lines, _ = check(config)
    assert code == 1
    assert lines == [
        "pools[1].min_workers: Input should be greater than or equal to 0",
        "pools[3].colour: Extra inputs are not permitted",
        "router.max_pending_per_pool: Input should be a valid integer, unable to parse string "
        "as an integer",
        # Pools that are valid by themselves are loaded although the file is not.
        "pools[0].server: pool 'kit' failed to start: No module named 'cluster.examples.testkitt'",
        "pools[2].command: pool 'calc' failed to start: command 'raybus-no-such-command' is "
        "not on PATH",
    ]


def test_servers_tools_and_commands_that_cannot_start_say_why_in_raybus_up_words(
    tmp_path: Path,
) -> None:
    write(tmp_path / "no_functions_here.py", "VALUE = 1\n")
    config = write(
        tmp_path / "bus.yaml",
        """
        name: loads
        pools:
          - name: attr
            server: "cluster.examples.testkit:no_such_server"
          - name: fns
            tools: "no_functions_here"
          - name: notaserver
            server: "cluster.examples.functions:hypotenuse"
          - name: abs
            command: ["/no/such/server", "--stdio"]
        gateway:
          host: 0.0.0.0
        """,
    )
    code, lines, _ = check(config, cwd=tmp_path)  # workers find modules in the cwd too
    assert code == 1
    assert lines == [
        "pools[0].server: pool 'attr' failed to start: AttributeError: module "
        "'cluster.examples.testkit' has no attribute 'no_such_server'",
        "pools[1].tools: pool 'fns' failed to start: ValueError: module 'no_functions_here' "
        "defines no public functions to serve as tools",
        "pools[2].server: pool 'notaserver' failed to start: ValueError: "
        "'cluster.examples.functions:hypotenuse' is a function, not an MCP server",
        "pools[3].command: pool 'abs' failed to start: command '/no/such/server' does not "
        "exist or is not executable",
        "gateway.host: raybus up would refuse to bind 0.0.0.0: only loopback is allowed "
        "without authentication",
    ]


def test_a_server_that_hangs_while_loading_is_stopped_at_the_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "hanging.pid"
    write(
        tmp_path / "hangs_on_import.py",
        """
        import os, pathlib, threading
        pathlib.Path(os.environ["HANG_PID_FILE"]).write_text(str(os.getpid()))
        threading.Event().wait()
        """,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = write(
        elsewhere / "bus.yaml",
        f"""
        name: contained
        pools:
          - name: hangs
            server: "hangs_on_import:server"
            runtime_env:
              env_vars: {{PYTHONPATH: "{tmp_path}", HANG_PID_FILE: "{pid_file}"}}
        """,
    )
    # Long enough for the loader's own imports on a loaded machine to reach the module.
    code, lines, _ = check(config, "--timeout", "20", cwd=elsewhere)
    assert (code, lines) == (
        1,
        [
            "pools[0].server: pool 'hangs' failed to start: loading the server did not finish "
            "within 20 s"
        ],
    )
    hanging_pid = int(pid_file.read_text())  # found through the pool's runtime_env PYTHONPATH
    assert not Path(f"/proc/{hanging_pid}").exists()  # killed, not left running


def test_a_server_that_prints_or_exits_while_loading_cannot_pollute_the_check(
    tmp_path: Path,
) -> None:
    write(
        tmp_path / "prints_on_import.py",
        """
        print("ok: this line is the module's, not the check's")
        from mcp.server.mcpserver import MCPServer
        server = MCPServer("noisy")
        """,
    )
    write(tmp_path / "exits_on_import.py", "import os\nos._exit(3)\n")
    config = write(
        tmp_path / "bus.yaml",
        """
        name: contained
        pools:
          - name: noisy
            server: "prints_on_import:server"
          - name: quits
            tools: "exits_on_import"
        """,
    )
    code, lines, _ = check(config, cwd=tmp_path)
    assert code == 1
    assert lines == [
        "pools[1].tools: pool 'quits' failed to start: loading the server ended its process "
        "(exit code 3)",
    ]


def test_a_pool_whose_code_ray_ships_is_left_to_its_workers_with_a_note(tmp_path: Path) -> None:
    config = write(
        tmp_path / "bus.yaml",
        """
        name: shipped
        pools:
          - name: far
            server: "far_away:server"
            runtime_env: {pip: ["far-away-server"]}
        """,
    )
    code, lines, _ = check(config)
    assert code == 0
    assert lines == [
        "note: pools[0].server: not loaded here: runtime_env.pip brings its code to the workers",
        "ok: bus 'shipped', 1 pool",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "cannot read: No such file or directory"),
        ("pools: [unclosed\n", "not valid YAML at line 2, column 1: expected ',' or ']'"),
        ("", "the file is empty: a bus needs at least 'pools:'"),
        ("- just\n- a list\n", "(top level): Input should be a valid dictionary"),
    ],
)
def test_a_file_that_is_not_a_config_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, expected: str
) -> None:
    path = tmp_path / "bus.yaml"
    if text is not None:
        path.write_text(text)
    assert main(["config", "check", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert expected in lines[0]


def test_the_load_timeout_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["config", "check", "bus.yaml", "--timeout", "0"])
    assert "must be seconds in (0, 3600]" in capsys.readouterr().err


def test_a_triggers_map_that_does_not_import_and_a_tool_no_pool_offers_are_each_one_line(
    tmp_path: Path,
) -> None:
    write(tmp_path / "maps_here.py", "NOT_CALLABLE = 1\n\ndef args(record):\n    return {}\n")
    triggers = [
        ("good", "echo", "maps_here:args"),
        ("missing", "echo", "no_such_module:args"),
        ("constant", "echo", "maps_here:NOT_CALLABLE"),
        ("typo", "ecko", "maps_here:args"),
    ]
    lines_of_config = [
        "name: triggered",
        'kafka: {bootstrap: "127.0.0.1:9092"}',
        "pools:",
        "  - {name: kit, server: 'cluster.examples.testkit:server'}",
        "triggers:",
        *(
            f"  - {{name: {name}, source: {{kafka: {{topic: orders}}}}, tool: {tool}, "
            f"map: '{path}'}}"
            for name, tool, path in triggers
        ),
    ]
    config = tmp_path / "bus.yaml"
    config.write_text("\n".join(lines_of_config) + "\n")
    code, lines, _ = check(config, cwd=tmp_path)  # map: modules found in the cwd too
    assert code == 1
    assert lines[:2] == [
        "triggers[1].map: cannot import 'no_such_module:args': No module named 'no_such_module'",
        "triggers[2].map: 'maps_here:NOT_CALLABLE' is not callable",
    ]
    assert len(lines) == 3
    assert lines[2].startswith("triggers[3].tool: no pool offers 'ecko' (offered: ")
    assert "echo" in lines[2]
