"""Event triggers: records on a broker call a tool; results and failures go to topics.

Pure parts only (no broker, no Ray): the record view and argument template
(:mod:`actors.triggers.template`), the loop with its ports (:mod:`actors.triggers.core`)
and its counters (:mod:`actors.triggers.stats`). ``cluster.triggers`` wires them to
Kafka and to a bus client.
"""
