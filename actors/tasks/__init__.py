"""Tasks: tool calls the bus runs for a caller and keeps the outcome of (issue 21).

Pure logic, no Ray: :mod:`~actors.tasks.model` (record, status machine, era views),
:mod:`~actors.tasks.store` (the store's core, with its ports) and
:mod:`~actors.tasks.journal` (where records outlive a store).
"""
