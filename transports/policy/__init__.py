"""Policy building blocks for the gateway: tokens, rate limits, schema checks, redaction.

Pure logic (no Ray, no HTTP), driven by ``cluster.gateway_policy``.
"""
