"""Ray Data integration: score a dataset by calling a bus tool once per row.

::

    import ray
    from cluster.data import ToolCaller

    ds = ray.data.read_parquet("reviews.parquet")
    scored = ds.map_batches(
        ToolCaller,
        fn_constructor_kwargs={"bus": "demo", "tool": "score", "arguments": {"text": "review"}},
        batch_format="pyarrow",
        concurrency=4,
        batch_size=256,
    )

* :mod:`cluster.data.caller`: :class:`ToolCaller`, the callable class (one bus client per
  actor of Ray Data's pool, start-up checks, bounded concurrent calls per batch);
* :mod:`cluster.data.columns`: rows -> tool arguments, outcomes -> the ``result`` (JSON
  text) and ``error`` (``{code, message}``) columns;
* :mod:`cluster.data.retry`: which failed calls are retried (pushed back by the bus, and
  safe to repeat) and how long to wait.
"""

from __future__ import annotations

from cluster.data.caller import ToolCaller
from cluster.data.columns import ERROR_TYPE
from cluster.data.errors import ToolCallerError
from cluster.data.retry import RetryPolicy

__all__ = ["ERROR_TYPE", "RetryPolicy", "ToolCaller", "ToolCallerError"]
