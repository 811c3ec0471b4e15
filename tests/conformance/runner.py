"""Run the official MCP conformance suite against a server URL and read its verdict.

The suite is the npm package ``@modelcontextprotocol/conformance``, pinned below. It
needs Node >= 22, which this machine may not have, so both come from the npm registry
into the project's own cache (``<cache>/conformance-<version>``, the same cache the Kafka
broker uses), once, by :mod:`tests.npm_packages` (an interrupted install never counts).
Only the ``npm`` client itself must be on ``PATH``; nothing outside the clone is read.

From the shell (``make conformance URL=... ERA=...`` wraps it)::

    python -m tests.conformance.runner http://127.0.0.1:8766/mcp 2026-07-28

Every server scenario of the requested era runs; the suite ends its output with
``Total: N passed, M failed``, which :func:`run_suite` reads.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from cluster.services.state import default_cache_dir
from tests.npm_packages import NpmMissing, ensure_npm_packages

__all__ = [
    "SUITE_VERSION",
    "TASK_SCENARIOS",
    "ConformanceUnavailable",
    "ensure_suite",
    "run_scenario",
    "run_suite",
]

SUITE_VERSION = "0.2.0-alpha.12"
# The suite's engines field asks for Node 22; the `node` package on npm ships the binary.
NODE_PACKAGE = "node@22"
ERAS = ("2025-11-25", "2026-07-28")
# The suite's scenarios of the io.modelcontextprotocol/tasks extension (SEP-2663): they
# are not part of `--suite all --spec-version ...` (an extension scenario is filtered
# out of every era's run) and run one by one, at 2026-07-28, by name.
TASK_SCENARIOS = (
    "tasks-lifecycle",
    "tasks-capability-negotiation",
    "tasks-wire-fields",
    "tasks-request-state-removal",
    "tasks-mrtr-input",
    "tasks-request-headers",
    "tasks-dispatch-and-envelope",
    "tasks-status-notifications",
    "tasks-required-task-error",
    "tasks-mrtr-composition",
)

_TOTAL = re.compile(r"^Total: (\d+) passed, (\d+) failed\b", re.MULTILINE)
# One scenario run ends with its own summary instead: "Passed: 9/9, 0 failed, ...".
_SCENARIO_TOTAL = re.compile(r"^Passed: (\d+)/\d+, (\d+) failed\b", re.MULTILINE)
_SUITE_ENTRY = Path("node_modules/@modelcontextprotocol/conformance/dist/index.js")
_NODE_BIN = Path("node_modules/.bin/node")


class ConformanceUnavailable(NpmMissing):
    """This machine has no ``npm`` client, so the suite cannot be installed at all."""


def suite_home(cache_dir: Path | None = None) -> Path:
    """Where the pinned suite and its Node live: ``<cache>/conformance-<version>``."""
    return (cache_dir or default_cache_dir()) / f"conformance-{SUITE_VERSION}"


def ensure_suite(cache_dir: Path | None = None) -> Path:
    """Install the pinned suite and Node 22 into the cache unless already there.

    Returns:
        The suite's home directory (holding ``node_modules``).

    Raises:
        ConformanceUnavailable: ``npm`` is not on ``PATH``.
        RuntimeError: npm is there but the install failed; the message carries npm's
            output, so a broken registry or a bad pin is a failure, never a skip.
    """
    packages = [NODE_PACKAGE, f"@modelcontextprotocol/conformance@{SUITE_VERSION}"]
    try:
        return ensure_npm_packages(suite_home(cache_dir), packages, [_SUITE_ENTRY, _NODE_BIN])
    except NpmMissing as exc:
        raise ConformanceUnavailable(str(exc)) from exc


def run_suite(
    url: str, era: str, timeout_s: float = 900, cache_dir: Path | None = None
) -> tuple[int, int, str]:
    """Run every server scenario of ``era`` against ``url``.

    Args:
        url: The server's Streamable HTTP endpoint, e.g. ``http://127.0.0.1:8766/mcp``;
            it must already be listening.
        era: The spec version to test, ``2025-11-25`` or ``2026-07-28``.
        timeout_s: Bound on the run itself (the install has its own bound).
        cache_dir: The raybus cache; ``default_cache_dir()`` when omitted.

    Returns:
        ``(passed, failed)`` check counts from the suite's last ``Total:`` line, and the
        full combined stdout and stderr. A non-zero exit of the suite is not an error
        here: it means ``failed > 0``, which the counts already say.

    Raises:
        ValueError: ``era`` is not one the pinned suite knows.
        ConformanceUnavailable: no ``npm`` on this machine.
        subprocess.TimeoutExpired: The run took longer than ``timeout_s``.
        RuntimeError: The install failed, or the output has no ``Total:`` line (the suite
            could not start); the message carries the output's tail.
    """
    if era not in ERAS:
        raise ValueError(f"era must be one of {ERAS}, not {era!r}")
    return _run(url, ["--suite", "all", "--spec-version", era], timeout_s, cache_dir)


def run_scenario(
    url: str, scenario: str, timeout_s: float = 300, cache_dir: Path | None = None
) -> tuple[int, int, str]:
    """Run one named scenario (an extension's, e.g. one of :data:`TASK_SCENARIOS`)
    against ``url``; without ``--spec-version``, which would filter it out.

    Returns and raises as :func:`run_suite` (``ValueError``: not a task scenario).
    """
    if scenario not in TASK_SCENARIOS:
        raise ValueError(f"scenario must be one of {TASK_SCENARIOS}, not {scenario!r}")
    return _run(url, ["--scenario", scenario], timeout_s, cache_dir)


def _run(
    url: str, selection: list[str], timeout_s: float, cache_dir: Path | None
) -> tuple[int, int, str]:
    home = ensure_suite(cache_dir)
    # The suite writes result files relative to its working directory.
    command = [str(home / _NODE_BIN), str(home / _SUITE_ENTRY), "server", "--url", url]
    command += selection
    with tempfile.TemporaryDirectory(prefix="raybus-conformance-") as workdir:
        completed = subprocess.run(
            command,
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        # The summary says only how many checks failed; which, and why, is in the files.
        failures = failed_checks(Path(workdir))
    output = completed.stdout
    if failures:
        output += "\n=== FAILED CHECKS ===\n" + "\n".join(failures) + "\n"
    totals = _TOTAL.findall(output) or _SCENARIO_TOTAL.findall(output)
    if not totals:
        raise RuntimeError(
            f"conformance run exited {completed.returncode} without a Total line:\n{output[-2000:]}"
        )
    passed, failed = totals[-1]
    return int(passed), int(failed), output


def failed_checks(results: Path) -> list[str]:
    """One line per failed check in the ``checks.json`` files of a run: the scenario's
    folder, the check's id and what the suite says of it."""
    lines = []
    for path in sorted(results.rglob("checks.json")):
        try:
            checks = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            lines.append(f"{path.parent.name}: unreadable checks.json ({exc})")
            continue
        for check in checks if isinstance(checks, list) else []:
            if isinstance(check, dict) and check.get("status") == "FAILURE":
                said = check.get("errorMessage") or check.get("description") or ""
                details = json.dumps(check.get("details"))[:500] if check.get("details") else ""
                lines.append(f"{path.parent.name}: {check.get('id')}: {said} {details}".rstrip())
    return lines


def _main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print("usage: python -m tests.conformance.runner URL [ERA]", file=sys.stderr)
        return 2
    url, era = argv[0], argv[1] if len(argv) == 2 else ERAS[0]
    passed, failed, output = run_suite(url, era)
    print(output, end="")
    print(f"conformance {era}: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
