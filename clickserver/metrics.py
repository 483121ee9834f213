"""Prometheus metrics: the counters the code increments, and the registry a scrape reads.

Every label takes values from a fixed set in our own code (status classes, outcomes, rejection
codes), never from input, so the number of series stays bounded.

gunicorn runs several worker processes, each with its own counters. With PROMETHEUS_MULTIPROC_DIR
set (before prometheus_client is first imported: it picks its value store at import), each
process writes its counters to memory-mapped files in that directory and a scrape sums them over
every process, dead ones included, so a counter never goes back when gunicorn recycles a worker.
Without it each process keeps its own counters, which is right for a single process (runserver,
a Celery worker with a solo or threads pool) and only there.

The pipeline's counters grow in the Celery worker's processes, not gunicorn's: a worker started
with METRICS_WORKER_BIND serves its own (bearer METRICS_TOKEN only) from a thread of its main
process, which forks the pool, so its directory must be its own, not gunicorn's.
"""

import hmac
import logging
import os
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

# Each counter would also export a `_created` timestamp series: twice the samples per scrape for
# what Prometheus infers from a counter reset anyway.
disable_created_metrics()

INGEST_REQUESTS = Counter(
    "clickserver_ingest_requests",
    "Ingestion POST requests answered, by status class.",
    ["status_class"],
)
INGEST_EVENTS = Counter(
    "clickserver_ingest_events",
    "Events in ingestion requests: stored, already stored (a re-sent event_id), or rejected.",
    ["outcome"],
)
INGEST_REJECTED_EVENTS = Counter(
    "clickserver_ingest_rejected_events",
    "Events rejected at ingestion (stored as RejectedEvent), by rejection code.",
    ["code"],
)
RATELIMIT_REDIS_UNAVAILABLE = Counter(
    "clickserver_ratelimit_redis_unavailable",
    "Rate-limit counts that failed open to this process's own count because Redis was away.",
)
PIPELINE_BATCHES = Counter(
    "clickserver_pipeline_batches",
    "Pipeline batches run (events_process), by outcome.",
    ["outcome"],
)
PIPELINE_EVENTS_PROCESSED = Counter(
    "clickserver_pipeline_events_processed",
    "Events the pipeline assigned to sessions and persons.",
)
PIPELINE_EVENTS_QUARANTINED = Counter(
    "clickserver_pipeline_events_quarantined",
    "Events the pipeline could not process, moved to the rejected events (code pipeline_failed).",
)

# Resolved once: .labels() takes a lock and a dict lookup that the per-request path can skip.
STATUS_CLASS = {
    status_class: INGEST_REQUESTS.labels(status_class=status_class)
    for status_class in ("2xx", "4xx", "5xx")
}
EVENTS_ACCEPTED = INGEST_EVENTS.labels(outcome="accepted")
EVENTS_DUPLICATE = INGEST_EVENTS.labels(outcome="duplicate")
EVENTS_REJECTED = INGEST_EVENTS.labels(outcome="rejected")
BATCHES_PROCESSED = PIPELINE_BATCHES.labels(outcome="processed")
BATCHES_FAILED = PIPELINE_BATCHES.labels(outcome="failed")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

logger = logging.getLogger(__name__)


def status_class(status: int) -> str:
    return "5xx" if status >= 500 else "4xx" if status >= 400 else "2xx"


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def metrics_render(*, collectors: tuple = ()) -> bytes:
    """The text exposition of every process's counters (or this one's), plus `collectors`."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        # Summed from the files; this process's own process_* and gc metrics would describe
        # one arbitrary worker, so they are left out.
        MultiProcessCollector(registry)
    else:
        registry.register(REGISTRY)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry)


def bearer_matches(authorization: str, token: str) -> bool:
    """Whether an Authorization header carries `token`; constant time, never for an empty one."""
    scheme, _, given = authorization.partition(" ")
    return (
        bool(token)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), token.encode())
    )


def metrics_wsgi_app(*, token: str) -> Callable[[dict, Callable], Iterable[bytes]]:
    """/metrics for a process without Django's URLs (the Celery worker): the token or 404."""

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if not bearer_matches(environ.get("HTTP_AUTHORIZATION", ""), token):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Not found.\n"]
        body = metrics_render()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE)])
        return [body]

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # one line per scrape is noise
        pass


def metrics_serve(*, bind: str, token: str) -> WSGIServer:
    """Serve `metrics_wsgi_app` on `bind` ("host:port") from a daemon thread; returns the server."""
    host, _, port = bind.rpartition(":")
    server = make_server(
        host,
        int(port),
        metrics_wsgi_app(token=token),
        server_class=_ThreadingServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("metrics: serving /metrics on %s:%s", *server.server_address[:2])
    return server
