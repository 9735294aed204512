"""``GET /metrics``: Prometheus text format, one registry per app.

Most values are read from the engine when scraped (no counters sprinkled through
the engine): stored jobs by kind and status, the jobs held now, the limiter, the
clients' retry counts, open SSE streams. Counters of bytes and files are what
finished jobs moved since start (:class:`~streamer._engine.engine.Totals`) plus
what running jobs have moved so far. Request latency is observed per route
template (``/api/transfer/{job_id}``, never the raw path); for a streamed answer
(SSE, downloads) it is the time to the response headers.

``metrics.auth`` (default on) asks for ``Authorization: Bearer`` with
``metrics.token`` or an API token; off, the endpoint is open (bind it to a
private address then). ``metrics.enabled: false`` answers 404.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Final, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from quart import Blueprint, Response, current_app, request

from .._config import MetricsConfig
from .._engine import JobStatus
from .._engine.engine import Engine, file_counts
from .._errors import NotFound
from .app import Services, services
from .describe import API_TOKEN, METRICS_TOKEN, Reply, Stream, describe

blueprint = Blueprint("metrics", __name__)

PUBLIC_ENDPOINTS = frozenset({"metrics.scrape"})
"""The endpoint checks its own credentials (``metrics.auth``)."""

#: Which way a job kind moves bytes, seen from this node.
DIRECTIONS: Final[Mapping[str, str]] = {
    "cross-storage": "local",
    "s3-upload": "out",
    "s3-download": "in",
    "huggingface": "in",
    "url": "in",
    "local-upload": "in",
    "node-push": "out",
    "node-receive": "in",
}
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
UNMATCHED_ROUTE: Final = "unmatched"


class RetryCounter(Protocol):
    """A client whose :class:`~streamer._retry.Backoff` counts its retries."""

    @property
    def retries(self) -> int: ...


class Metrics:
    """The app's registry: the engine collector and the request-latency histogram."""

    def __init__(self, svc: Services) -> None:
        self.settings: MetricsConfig = svc.metrics
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(EngineCollector(svc))
        self.latency = Histogram(
            "streamer_http_request_duration_seconds",
            "Time to answer an HTTP request (to the headers, for streams), by route template.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str | None, status: int, seconds: float) -> None:
        self.latency.labels(method, route or UNMATCHED_ROUTE, str(status)).observe(seconds)

    def check(self, header: str | None, svc: Services) -> None:
        """Raise :class:`~streamer._errors.Unauthorized` unless ``header`` may scrape."""
        if not self.settings.auth:
            return
        scheme, _, presented = (header or "").partition(" ")
        token = self.settings.token
        if (
            token
            and scheme.lower() == "bearer"
            and hmac.compare_digest(presented.strip().encode(), token.encode())
        ):
            return
        svc.auth.check(header)


class EngineCollector(Collector):
    """Reads the engine, the clients and the SSE streams at scrape time."""

    def __init__(self, svc: Services) -> None:
        self._svc = svc

    def collect(self) -> Iterator[Metric]:
        engine = self._svc.engine
        running = engine.running()
        yield _stored_jobs(engine)
        finished = CounterMetricFamily(
            "streamer_jobs_finished",
            "Jobs that finished since start, by kind and final status.",
            labels=["kind", "status"],
        )
        for (kind, status), count in sorted(engine.totals.jobs.items()):
            finished.add_metric([kind, status], count)
        yield finished
        yield from _moved(engine)
        active = sum(job.status is JobStatus.IN_PROGRESS for job in running)
        yield GaugeMetricFamily("streamer_jobs_active", "Jobs running now.", value=active)
        yield GaugeMetricFamily(
            "streamer_jobs_queued",
            "Jobs waiting for a free slot of the limiter.",
            value=len(running) - active,
        )
        yield GaugeMetricFamily(
            "streamer_concurrency_limit",
            "Jobs allowed to run at once (max concurrent transfers).",
            value=engine.max_concurrent,
        )
        yield GaugeMetricFamily(
            "streamer_concurrency_in_use",
            "Slots of the limiter taken now.",
            value=engine.active_count,
        )
        retries = CounterMetricFamily(
            "streamer_retries",
            "Retries taken by the storage and import clients (exponential backoff).",
            labels=["client"],
        )
        for name, client in sorted(self._svc.retry_counters.items()):
            retries.add_metric([name], client.retries)
        yield retries
        yield GaugeMetricFamily(
            "streamer_sse_subscribers",
            "Open progress streams (Server-Sent Events).",
            value=self._svc.subscribers.count,
        )


def _stored_jobs(engine: Engine) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "streamer_jobs",
        "Jobs in the state database (kept until cleanup or retention), by kind and status.",
        labels=["kind", "status"],
    )
    for (kind, status), count in sorted(engine.store.count_jobs().items()):
        family.add_metric([kind, status], count)
    return family


def _moved(engine: Engine) -> Iterator[Metric]:
    """Bytes and files moved: finished jobs since start plus running jobs so far."""
    moved = Counter(engine.totals.bytes)
    files = Counter(engine.totals.files)
    for job in engine.running():
        moved[job.kind] += job.bytes_transferred
        for status, count in file_counts(job).items():
            files[(job.kind, status)] += count
    transferred = CounterMetricFamily(
        "streamer_transferred_bytes",
        "Bytes moved by jobs, by kind and direction (in, out, or local: both ends here).",
        labels=["kind", "direction"],
    )
    for kind, count in sorted(moved.items()):
        transferred.add_metric([kind, DIRECTIONS.get(kind, "other")], count)
    yield transferred
    done = CounterMetricFamily(
        "streamer_files",
        "Files finished by jobs, by kind and status (completed, skipped, error).",
        labels=["kind", "status"],
    )
    for (kind, status), count in sorted(files.items()):
        done.add_metric([kind, status], count)
    yield done


def metrics_of_app() -> Metrics:
    return current_app.extensions["metrics"]  # type: ignore[no-any-return]


@blueprint.get("/metrics")
@describe(
    "Prometheus metrics",
    auth=(API_TOKEN, METRICS_TOKEN),
    responses={
        200: Reply("Prometheus text exposition format.", Stream("", media_type="text/plain"))
    },
    errors={404: "Metrics are disabled (metrics.enabled: false)."},
)
async def scrape() -> Response:
    """Bearer token unless ``metrics.auth`` is false: ``metrics.token`` or an API token."""
    metrics = metrics_of_app()
    if not metrics.settings.enabled:
        raise NotFound("metrics are disabled on this node (metrics.enabled)")
    metrics.check(request.headers.get("Authorization"), services())
    return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)
