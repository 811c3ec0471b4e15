"""``python -m benchmarks [NAME ...]``: run benchmarks and print their tables."""

from __future__ import annotations

import sys
from collections.abc import Callable

from benchmarks import (
    autoscale_burst,
    backend_latency,
    batch_scoring,
    bus_throughput,
    kafka_latency,
    sqs_latency,
    transport_throughput,
)

SUITES: dict[str, Callable[[], list[tuple[str, str]]]] = {
    "transports": transport_throughput.run,
    "bus": bus_throughput.run,
    "autoscale": autoscale_burst.run,
    "kafka": kafka_latency.run,
    "sqs": sqs_latency.run,
    "backends": backend_latency.run,
    "batch": batch_scoring.run,
}


def main(names: list[str]) -> int:
    unknown = set(names) - set(SUITES)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: {', '.join(SUITES)}")
        return 2
    for name in names or list(SUITES):
        print(f"## {name}")
        rows = SUITES[name]()
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            print(f"{label:<{width}}  {value}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
