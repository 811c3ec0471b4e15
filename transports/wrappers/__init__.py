"""Transports that wrap a transport: each implements the protocol it wraps, so they compose.

Import each from its module (``transports.wrappers.batching`` and so on).
"""
