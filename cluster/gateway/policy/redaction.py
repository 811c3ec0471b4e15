"""PII redaction for audit records and, by policy, outbound results.

Finds emails, phone numbers, card numbers that pass the Luhn check, US social security
numbers, and secrets shaped like bearer tokens or well-known API keys; each is replaced
by ``[REDACTED:<kind>]``. Works on any JSON value (strings inside it, object keys
included, are rewritten).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["luhn_valid", "redact", "redact_text"]

# Every pattern runs on untrusted text (tool arguments, always, for the audit log), so
# each must cost time linear in the text. Python's ``re`` backtracks: a pattern that can
# start at every position of a run and scan to its end costs the square of the run's
# length (one 1 MB word pinned the gateway). Hence: a pattern with an unbounded run
# starts only where that run starts (a lookbehind for a character outside the class)
# and takes the run possessively (``++``), so each character is scanned a bounded number
# of times; every other repetition is bounded ({m,n}).
_LOCAL = "A-Za-z0-9._%+-"
_EMAIL = re.compile(rf"(?<![{_LOCAL}])[{_LOCAL}]++@[A-Za-z0-9.-]+\.[A-Za-z]{{2,}}")
_SECRET = re.compile(
    r"(?:\bBearer\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\bxox[abpr]-[A-Za-z0-9-]{10,})"
)
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
_CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
# The country code is optional so that "(415) 555-0100" is found too.
_PHONE = re.compile(
    r"(?<![\w])(?:\+?\d{1,3}[ .-]?)?\(?\d{2,4}\)?[ .-]?\d{3,4}[ .-]?\d{3,4}(?![\w])"
)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group())
    return "[REDACTED:card]" if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group()


def redact_text(text: str) -> str:
    text = _SECRET.sub("[REDACTED:secret]", text)
    text = _EMAIL.sub("[REDACTED:email]", text)
    text = _SSN.sub("[REDACTED:national-id]", text)
    text = _CARD.sub(_card, text)
    return _PHONE.sub(
        lambda m: "[REDACTED:phone]" if sum(c.isdigit() for c in m.group()) >= 9 else m.group(),
        text,
    )


def redact(value: Any) -> Any:
    """A copy of a JSON value with every string redacted."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        # Keys are text too ({"alice@example.com": ...}); two keys that redact alike stay
        # two entries, numbered, so no value is lost.
        out: dict[Any, Any] = {}
        for key, item in value.items():
            name = redact_text(key) if isinstance(key, str) else key
            if name in out:
                n = 2
                while f"{name} ({n})" in out:
                    n += 1
                name = f"{name} ({n})"
            out[name] = redact(item)
        return out
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
