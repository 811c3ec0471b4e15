"""Run the official MCP conformance suite against a server URL and read its verdict.

A thin wrapper over the shared ``conformance`` tool (``../shared/tools/conformance``
relative to the repository root), usable from tests, benchmarks and by hand::

    python tests/conformance_run.py http://127.0.0.1:8766/mcp 2026-07-28

The tool installs the pinned npm suite on first use, runs every server scenario of the
requested era and ends its output with ``Total: N passed, M failed``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["CONFORMANCE_TOOL", "run_suite"]

_REPO_ROOT = Path(__file__).resolve().parent.parent
CONFORMANCE_TOOL = _REPO_ROOT.parent / "shared" / "tools" / "conformance"

_TOTAL = re.compile(r"^Total: (\d+) passed, (\d+) failed\b", re.MULTILINE)


def run_suite(url: str, era: str, timeout_s: float = 600) -> tuple[int, int, str]:
    """Run every server scenario of ``era`` against ``url``.

    Args:
        url: The server's Streamable HTTP endpoint, e.g. ``http://127.0.0.1:8766/mcp``;
            it must already be listening.
        era: The spec version to test, ``2025-11-25`` or ``2026-07-28``.
        timeout_s: Bound on the whole run, including a first-time npm install.

    Returns:
        ``(passed, failed)`` check counts from the suite's last ``Total:`` line, and the
        full combined stdout and stderr. A non-zero exit of the tool is not an error here:
        it means ``failed > 0``, which the counts already say.

    Raises:
        subprocess.TimeoutExpired: The run took longer than ``timeout_s``.
        RuntimeError: The output has no ``Total:`` line (the tool could not install or
            start the suite); the message carries the output's tail.
    """
    # The suite may write result files relative to its working directory.
    with tempfile.TemporaryDirectory(prefix="raybus-conformance-") as workdir:
        completed = subprocess.run(
            [str(CONFORMANCE_TOOL), url, era],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    output = completed.stdout
    totals = _TOTAL.findall(output)
    if not totals:
        raise RuntimeError(
            f"conformance run exited {completed.returncode} without a Total line:\n{output[-2000:]}"
        )
    passed, failed = totals[-1]
    return int(passed), int(failed), output


def _main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print("usage: conformance_run.py URL [ERA]", file=sys.stderr)
        return 2
    url, era = argv[0], argv[1] if len(argv) == 2 else "2025-11-25"
    passed, failed, output = run_suite(url, era)
    print(output, end="")
    print(f"conformance {era}: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
