"""Batch scoring: a Ray Dataset of reviews scored through the bus, one tool call per row.

::

    python -m cluster.examples.batch_scoring                  # its own local Ray and bus
    python -m cluster.examples.batch_scoring --bus demo       # a bus already running there
    python -m cluster.examples.batch_scoring --rows 100000 --actors 4

Without ``--bus`` it starts a bus named ``batch-scoring`` with one pool hosting
:mod:`cluster.examples.scoring` and stops it at the end. Every 97th review is empty: the
tool refuses it, and that row gets an error while the others get their scores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections import Counter
from typing import Any

import pyarrow as pa
import ray
from tqdm import tqdm

from cluster.bus import launch_bus, stop_bus
from cluster.config import parse_config
from cluster.data import ToolCaller

OWN_BUS = "batch-scoring"
_WORDS = ["great", "awful", "fine", "broken", "superb", "boring", "nice", "sad"]


def reviews(rows: int) -> list[dict[str, Any]]:
    """Synthetic reviews; every 97th one is empty (the bad row)."""
    return [
        {"id": i, "review": "" if i % 97 == 0 else f"{_WORDS[i % 8]} and {_WORDS[i % 5]} item {i}"}
        for i in range(rows)
    ]


def score(args: argparse.Namespace, bus: str) -> dict[str, Any]:
    # Ray Data's own bars are replaced by one bar of scored rows (count, rate, ETA), shown
    # only on a terminal; when output is piped, nothing of it is printed. A dataset keeps
    # the context it was made in: set before it is made.
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # its progress log lines too
    dataset = ray.data.from_items(reviews(args.rows))
    scored = dataset.map_batches(
        ToolCaller,
        fn_constructor_kwargs={
            "bus": bus,
            "tool": "score",
            "arguments": {"text": "review"},
            "max_concurrency": args.max_concurrency,
        },
        batch_format="pyarrow",  # Ray Data's blocks are Arrow: no conversion either way
        batch_size=args.batch_size,
        compute=ray.data.ActorPoolStrategy(size=args.actors),
        num_cpus=0.25,  # the actors mostly wait on the bus
    )
    started = time.perf_counter()
    done, total_score = 0, 0.0
    sample: list[dict[str, Any]] = []
    errors: Counter[str] = Counter()
    # The process's own stderr: after ray.init, sys.stderr is Ray's wrapper, never a tty.
    terminal = sys.__stderr__
    shown = terminal is not None and os.isatty(terminal.fileno())
    bar = tqdm(total=args.rows, unit="row", file=terminal, disable=not shown)
    # Results stream in batch by batch (the job runs meanwhile): memory stays flat.
    for batch in scored.iter_batches(batch_size=args.batch_size, batch_format="pyarrow"):
        table: pa.Table = batch  # pyarrow, as asked
        for row in table.to_pylist():
            if row["error"] is not None:
                errors[row["error"]["message"]] += 1
            else:
                total_score += json.loads(row["result"])["score"]
            if len(sample) < 2 and row["id"] in (1, 2):
                sample.append(row)
        done += table.num_rows
        bar.update(table.num_rows)
    bar.close()
    elapsed = time.perf_counter() - started
    scored_rows = done - sum(errors.values())
    return {
        "rows": done,
        "rows_per_s": round(done / elapsed),
        "mean_score": round(total_score / max(scored_rows, 1), 3),
        "errors": dict(errors),
        "sample": sample,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bus", help="a running bus to use (default: start one)")
    parser.add_argument("--address", help="Ray address (default: auto / a new local Ray)")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    ray.init(address=args.address, log_to_driver=False)
    own = args.bus is None
    bus = args.bus or OWN_BUS
    if own:
        pool = {"name": "scoring", "server": "cluster.examples.scoring:server"}
        asyncio.run(launch_bus(parse_config({"name": bus, "pools": [pool]})))
    try:
        print(json.dumps(score(args, bus), indent=2))
    finally:
        if own:
            asyncio.run(stop_bus(bus))
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
