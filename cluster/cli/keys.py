"""``raybus keys add | promote | retire | list BUS``: rotate an encrypted bus's keys live.

The order that fails no call in flight (each command returns once every live process of
the bus applied its step, or fails naming the ones that did not)::

    RAYBUS_KEY_K2=$(head -c 32 /dev/urandom | base64) raybus keys add payments k2
    raybus keys promote payments k2
    raybus keys retire payments k1            # waits out the drain (--drain, 60 s)

A key never goes on the command line: ``add`` reads base64 of 32 random bytes from the
environment (``--from-env VAR``, default ``RAYBUS_KEY_<ID>``), or derives it with HKDF
from a high-entropy secret there (``--secret-env VAR [--salt S]``), exactly as the
configuration's ``{hkdf_secret, salt}`` does. It is read before joining the cluster, so a
missing or bad key never waits for Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from typing import Any

from cluster.cli.clusters import add_address_argument, run_joined
from cluster.cli.failures import fail
from cluster.key_rotation import (
    DEFAULT_DRAIN_S,
    DEFAULT_STEP_TIMEOUT_S,
    add_key,
    describe_keys,
    promote_key,
    retire_key,
)
from transports.crypto.keyring import key_from_base64, key_from_secret

__all__ = ["add_parser", "default_key_env", "format_keys"]


def default_key_env(key_id: str) -> str:
    """``k2`` -> ``RAYBUS_KEY_K2``: where ``add`` looks for a key by default."""
    return "RAYBUS_KEY_" + re.sub(r"[^A-Z0-9]", "_", key_id.upper())


def format_keys(bus: str, described: dict[str, Any]) -> str:
    """The keys of a bus as text: which seals, which open, who follows at which version."""
    lines = [f"bus {bus} keys (version {described['version']})"]
    for key_id in described["keys"]:
        lines.append(f"  {key_id:<16}{'seals' if key_id == described['current'] else 'opens'}")
    if described["retired"]:
        lines.append(f"retired: {', '.join(described['retired'])}")
    members: dict[str, int] = described["members"]
    behind = {n: v for n, v in members.items() if v < described["version"]}
    lines.append(f"processes following: {len(members)}, behind: {len(behind)}")
    for name, version in sorted(behind.items()):
        lines.append(f"  {name} at version {version}")
    return "\n".join(lines)


def _key_from_environment(args: argparse.Namespace) -> bytes | str:
    """The key ``add`` was pointed at, or why not (one line)."""
    if args.secret_env is not None:
        secret = os.environ.get(args.secret_env)
        if secret is None:
            return f"environment variable {args.secret_env} (--secret-env) is not set"
        try:
            return key_from_secret(secret.encode("utf-8"), args.key_id, args.salt.encode())
        except ValueError as exc:
            return f"{args.secret_env}: {exc}"
    name = args.from_env or default_key_env(args.key_id)
    text = os.environ.get(name)
    if text is None:
        return (
            f"environment variable {name} is not set: put base64 of 32 random bytes there "
            "(keys never go on the command line), or name another with --from-env"
        )
    try:
        return key_from_base64(text)
    except ValueError as exc:
        return f"{name}: {exc}"


def _add_command(args: argparse.Namespace) -> int:
    if args.salt and args.secret_env is None:
        return fail("--salt goes with --secret-env")
    key = _key_from_environment(args)
    if isinstance(key, str):
        return fail(key)
    args.key = key
    return run_joined(_add, args)


async def _add(args: argparse.Namespace) -> int:
    described = await add_key(args.bus, args.key_id, args.key, timeout_s=args.timeout)
    print(_done(args.bus, f"key {args.key_id!r} added", described))
    return 0


async def _promote(args: argparse.Namespace) -> int:
    described = await promote_key(args.bus, args.key_id, timeout_s=args.timeout)
    print(_done(args.bus, f"key {args.key_id!r} seals new messages", described))
    return 0


async def _retire(args: argparse.Namespace) -> int:
    described = await retire_key(args.bus, args.key_id, drain_s=args.drain, timeout_s=args.timeout)
    print(_done(args.bus, f"key {args.key_id!r} retired", described))
    return 0


async def _list(args: argparse.Namespace) -> int:
    described = await describe_keys(args.bus)
    print(json.dumps(described) if args.json else format_keys(args.bus, described))
    return 0


def _done(bus: str, what: str, described: dict[str, Any]) -> str:
    count = len(described["members"])
    return f"bus {bus!r}: {what} (version {described['version']}, {count} processes applied it)"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds, got {text}")
    return value


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``keys`` and its ``add``, ``promote``, ``retire`` and ``list`` actions."""
    parser = subparsers.add_parser("keys", help="rotate the encryption keys of a running bus")
    actions = parser.add_subparsers(dest="keys_action", required=True, metavar="ACTION")

    def action(name: str, help_text: str, handler: Any, *, key_id: bool = True) -> Any:
        command = actions.add_parser(name, help=help_text)
        command.add_argument("bus")
        if key_id:
            command.add_argument("key_id", metavar="KEY_ID")
            command.add_argument(
                "--timeout",
                type=_seconds,
                default=DEFAULT_STEP_TIMEOUT_S,
                metavar="SECONDS",
                help="wait this long for every process to apply it (default %(default)g)",
            )
        add_address_argument(command)
        command.set_defaults(run=lambda args: run_joined(handler, args))
        return command

    add = action("add", "add a key that opens (step 1); the key comes from the environment", None)
    source = add.add_mutually_exclusive_group()
    source.add_argument(
        "--from-env", metavar="VAR", help="base64 of 32 bytes in VAR (default RAYBUS_KEY_<ID>)"
    )
    source.add_argument(
        "--secret-env", metavar="VAR", help="derive the key with HKDF from the secret in VAR"
    )
    add.add_argument("--salt", default="", help="HKDF salt, with --secret-env")
    add.set_defaults(run=_add_command)
    action("promote", "seal new messages with a key every process holds (step 2)", _promote)
    retire = action("retire", "stop opening a key nothing seals with any more (step 3)", _retire)
    retire.add_argument(
        "--drain",
        type=_seconds,
        default=DEFAULT_DRAIN_S,
        metavar="SECONDS",
        help="after every process switched, wait this long for messages sealed with it "
        "still in flight (default %(default)g: the longest call deadline)",
    )
    listed = action("list", "show the keys, the sealing one, and who follows", _list, key_id=False)
    listed.add_argument("--json", action="store_true", help="one JSON object")
