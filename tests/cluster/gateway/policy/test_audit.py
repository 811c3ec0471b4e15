"""The audit log writes off the caller's thread, loses nothing and digests with a key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cluster.gateway.policy.audit import ARGUMENTS, AuditLog


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_record_written_before_close_is_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path), max_pending=8)  # a small queue: callers overflow it
    for i in range(500):
        audit.write({"n": i})
    assert audit.close()
    # An overflowing caller writes its own record, possibly ahead of queued ones.
    assert sorted(r["n"] for r in _lines(path)) == list(range(500))  # type: ignore[type-var]
    audit.write({"n": 500})  # after close: written straight through, not lost
    assert _lines(path)[-1] == {"n": 500}


def test_arguments_are_redacted_and_digested_with_the_deployment_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(str(path), key=b"deployment-secret")
    arguments = {"card": "4111 1111 1111 1111"}
    audit.write({"method": "tools/call", ARGUMENTS: arguments})
    assert audit.flush()
    (record,) = _lines(path)
    assert record["arguments"] == {"card": "[REDACTED:card]"}
    assert record["arguments_hmac"] == audit.digest(arguments)
    unkeyed = hashlib.sha256(
        json.dumps(arguments, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    assert unkeyed not in path.read_text()  # a guess cannot be confirmed without the key
    assert AuditLog(None, key=b"other").digest(arguments) != audit.digest(arguments)
    assert "4111" not in path.read_text()
    audit.close()


def test_without_a_key_each_log_gets_a_random_one() -> None:
    first, second = AuditLog(None), AuditLog(None)
    assert first.digest({"a": 1}) != second.digest({"a": 1})
    assert first.digest({"a": 1}) == first.digest({"a": 1})
    first.close()
    second.close()


def test_the_newest_records_are_kept_in_memory() -> None:
    audit = AuditLog(None, keep=3)
    for i in range(10):
        audit.write({"n": i})
    assert audit.close()
    assert [r["n"] for r in audit.records] == [7, 8, 9]
