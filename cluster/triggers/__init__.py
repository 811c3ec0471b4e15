"""Event triggers on a bus: configuration (:mod:`.settings`), the Kafka and bus ports a
trigger actor runs with (:mod:`.ports`) and starting, stopping and reading them with the
bus (:mod:`.launch`). The loop itself is :mod:`actors.triggers.core`."""
