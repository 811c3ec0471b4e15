"""The policy chain in front of the bus: guards at the HTTP door, tokens, allow-lists,
rate limits, schema checks, redaction and the audit log."""
