"""Run a command with its stderr on a pseudo-terminal, as a person at a shell would.

Progress bars are drawn only when stderr is a terminal; tests of them need one.
"""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import termios
import threading

_COLUMNS = 120
_READ_BYTES = 4096


def run_with_terminal_stderr(argv: list[str], *, timeout_s: float) -> tuple[int, str, str]:
    """Run ``argv`` with stderr on a pseudo-terminal; returns (exit code, stdout, terminal).

    ``terminal`` is everything the command wrote to the terminal, escape codes included.
    """
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, _COLUMNS, 0, 0))
    seen: list[bytes] = []

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(primary, _READ_BYTES)
            except OSError:  # EIO: the last writer closed the terminal
                return
            if not chunk:
                return
            seen.append(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=secondary, text=True) as process:
            os.close(secondary)
            stdout, _ = process.communicate(timeout=timeout_s)
        reader.join(timeout=30)
    finally:
        os.close(primary)
    return process.returncode, stdout, b"".join(seen).decode("utf-8", "replace")
