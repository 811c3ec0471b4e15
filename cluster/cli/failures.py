"""How every ``raybus`` command fails: one line on stderr, or the traceback with --debug.

A user reads ``raybus: <what went wrong>`` and an exit code: 2 when the command was
refused before any work (bad arguments, a bad config file, a busy port), 1 when the
work itself failed (a pool that cannot start, a bus that is not running), 130 after
Ctrl-C. ``raybus --debug`` prints the traceback instead of the line, for the errors the
commands expect (:class:`~transports.errors.BusError`) and for those they do not.
Errors raised inside Ray actors arrive wrapped with the remote traceback in their text;
the line shows the original error's first line.
"""

from __future__ import annotations

import sys
import traceback

from transports.errors import BusError

__all__ = ["INTERRUPTED", "fail", "one_line", "report", "set_debug"]

INTERRUPTED = 130  # the shell's convention for a command ended by SIGINT

_settings = {"debug": False}


def set_debug(enabled: bool) -> None:
    """Show tracebacks instead of one line (``raybus --debug``); set once by ``main``."""
    _settings["debug"] = enabled


def _unwrapped(exc: BaseException) -> BaseException:
    cause = getattr(exc, "cause", None)  # a RayTaskError carries the remote exception
    if isinstance(cause, BaseException) and cause is not exc:
        return _unwrapped(cause)
    return exc


def one_line(exc: BaseException) -> str:
    """The exception as one line: a bus error's own message, else ``Type: message``."""
    exc = _unwrapped(exc)
    text = str(exc) if isinstance(exc, BusError) else f"{type(exc).__name__}: {exc}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def report(exc: BaseException, code: int = 1, *, context: str | None = None) -> int:
    """Say why the command failed (one line, or the traceback with --debug); returns ``code``.

    A :class:`BusError`, or any error given a ``context`` (``"demo failed"``: the command
    expected it), says it all (a config error lists each bad field on its own line);
    anything else is a bug or an environment problem, so the line names its type and
    points at --debug.
    """
    inner = _unwrapped(exc)
    message = str(inner) if isinstance(inner, BusError) else one_line(inner)
    if _settings["debug"]:
        traceback.print_exception(exc, file=sys.stderr)
    elif context is not None:
        print(f"raybus: {context}: {message}", file=sys.stderr)
    elif isinstance(inner, BusError):
        print(f"raybus: {message}", file=sys.stderr)
    else:
        hint = "(run `raybus --debug ...` for the traceback)"
        print(f"raybus: unexpected error: {message} {hint}", file=sys.stderr)
    sys.stderr.flush()
    return code


def fail(message: str, code: int = 2) -> int:
    """Refuse with ``raybus: message`` (no exception behind it); returns ``code``."""
    print(f"raybus: {message}", file=sys.stderr, flush=True)
    return code
