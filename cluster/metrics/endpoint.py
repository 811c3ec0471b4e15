"""``/metrics`` for users without a Prometheus set up for Ray: ``raybus up --metrics-port``.

Where the numbers come from (the choice, and why): at each scrape, the process serving
``/metrics`` asks each actor that records (router, supervisor, autoscaler, gateway
replicas and, on broker backends, workers) for a snapshot of its in-process registry,
one small actor call each, all at once, each bounded by ``timeout_s``; the snapshots are
merged and rendered. Scraping Ray's own metrics export instead (each node's
``metrics_export_port``) was the alternative; it was not taken because (1) raybus
installs a minimal Ray (``ray[data]``), where no metrics agent runs and that port serves
nothing; (2) Ray publishes only every ``metrics_report_interval_ms`` (10 s), so a page
would lag the bus by up to that much; (3) one page would need every node's port, found
through private node info. The snapshots are the same numbers Ray exports (both read the
same registries), are as fresh as the scrape, and cost one call per actor per scrape -
Prometheus scrapes every 15 s or so, and a page is reused for ``max_age_s`` however
often it is asked for.

An actor that does not answer in time is left out of that page and reported as
``raybus_metrics_source_up{source=...} 0``; a source that is absent (a bus without an
autoscaler) is simply not listed. Nothing here imports Ray: sources are plain async
callables (:mod:`cluster.metrics.sources` makes them from actor handles).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping

import uvicorn
from starlette.types import Receive, Scope, Send

from cluster.gateway.listener import GatewayBindError, QuietServer, bind_listener
from cluster.metrics.catalog import SOURCE_UP
from cluster.metrics.exposition import CONTENT_TYPE, render
from cluster.metrics.registry import FamilySnapshot, merge

__all__ = [
    "METRICS_HOST",
    "MetricsBindError",
    "MetricsCollector",
    "Source",
    "Sources",
    "metrics_app",
    "metrics_listener",
    "metrics_server",
]

logger = logging.getLogger(__name__)

# Metrics describe the bus (pool names, tools, refusals): loopback only, like the
# gateway's default; a Prometheus on another machine scrapes Ray's endpoint instead.
METRICS_HOST = "127.0.0.1"

# A snapshot or None when the source does not exist (not an error: nothing to report).
Source = Callable[[], Awaitable[list[FamilySnapshot] | None]]
# The current sources by name; awaitable when finding them takes a call (workers).
Sources = Callable[[], Mapping[str, Source] | Awaitable[Mapping[str, Source]]]


class MetricsCollector:
    """Collects and renders the page; concurrent scrapes share one collection.

    Args:
        bus: the bus (the ``bus`` label of the sources' up series).
        sources: returns the current sources by name (gateway replicas and workers come
            and go), or an awaitable of them.
        timeout_s: how long one source may take.
        max_age_s: a page this fresh is served again instead of asking every actor.
    """

    def __init__(
        self,
        bus: str,
        sources: Sources,
        *,
        timeout_s: float = 5.0,
        max_age_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._sources = sources
        self._timeout_s = timeout_s
        self._max_age_s = max_age_s
        self._clock = clock
        self._page: tuple[float, str] | None = None
        self._collecting: asyncio.Task[str] | None = None

    async def page(self) -> str:
        if self._page is not None and self._clock() - self._page[0] < self._max_age_s:
            return self._page[1]
        if self._collecting is None or self._collecting.done():
            self._collecting = asyncio.get_running_loop().create_task(self._collect())
        # Shielded: one scraper hanging up must not cancel the page others wait for.
        return await asyncio.shield(self._collecting)

    async def _collect(self) -> str:
        listed = self._sources()
        sources = dict(await listed if inspect.isawaitable(listed) else listed)
        answers = await asyncio.gather(*(self._ask(name, s) for name, s in sources.items()))
        up = FamilySnapshot(SOURCE_UP)
        snapshots: list[list[FamilySnapshot]] = []
        for name, (present, snapshot) in zip(sources, answers, strict=True):
            if not present:
                continue
            up.series[(self._bus, name)] = 0.0 if snapshot is None else 1.0
            if snapshot is not None:
                snapshots.append(snapshot)
        snapshots.append([up])
        page = render(merge(snapshots))
        self._page = (self._clock(), page)
        return page

    async def _ask(self, name: str, source: Source) -> tuple[bool, list[FamilySnapshot] | None]:
        """(whether the source exists, its snapshot or None when it failed)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                answer = await source()
        except TimeoutError:
            logger.warning("metrics source %s did not answer within %.1f s", name, self._timeout_s)
            return True, None
        except Exception as exc:  # noqa: BLE001 - one dead actor must not fail the page
            logger.warning("metrics source %s failed: %s", name, exc)
            return True, None
        return answer is not None, answer


def metrics_app(collector: MetricsCollector) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app: ``GET /metrics`` is the page; any other path 404, other methods 405."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        status, body, content_type, extra = 200, b"", CONTENT_TYPE, []
        if scope.get("path") != "/metrics":
            status, body, content_type = 404, b"not found: try /metrics\n", "text/plain"
        elif scope.get("method") not in ("GET", "HEAD"):
            status, body, content_type = 405, b"method not allowed\n", "text/plain"
            extra = [(b"allow", b"GET, HEAD")]
        else:
            body = (await collector.page()).encode()
        headers = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if scope.get("method") == "HEAD":
            body = b""
        await send({"type": "http.response.body", "body": body})

    return app


class MetricsBindError(GatewayBindError):
    """The metrics port cannot be bound."""

    serves = "metrics"


def metrics_listener(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port`` (0: any free one).

    Raises:
        MetricsBindError: the port is in use or cannot be bound.
    """
    try:
        return bind_listener(METRICS_HOST, port)
    except GatewayBindError as exc:
        raise MetricsBindError(METRICS_HOST, port, exc.reason) from None


def metrics_server(collector: MetricsCollector) -> QuietServer:
    """uvicorn serving :func:`metrics_app` (pass the bound socket to ``serve``)."""
    # No access log and no logging set-up of uvicorn's own: with ``--stdio`` this
    # process's stdout is the MCP stream, where uvicorn's access log would go.
    config = uvicorn.Config(
        metrics_app(collector),
        host=METRICS_HOST,
        log_level="warning",
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    return QuietServer(config)
