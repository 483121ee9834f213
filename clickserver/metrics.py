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
import ipaddress
import logging
import os
import resource
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
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

HTTP_REQUESTS = Counter(
    "clickserver_http_requests",
    "HTTP requests answered, by route name (the URL pattern's name, never the raw path), method "
    "and status class.",
    ["route", "method", "status_class"],
)
HTTP_DURATION = Histogram(
    "clickserver_http_request_duration_seconds",
    "Time from the request reaching Django to its response, by route name and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CELERY_TASKS = Counter(
    "clickserver_celery_tasks",
    "Celery tasks finished, by task name and outcome (success, failure, retry).",
    ["task", "outcome"],
)
CELERY_TASK_DURATION = Histogram(
    "clickserver_celery_task_duration_seconds",
    "Run time of Celery tasks (prerun to postrun), by task name.",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0),
)
CACHE_LOOKUPS = Counter(
    "clickserver_cache_lookups",
    "Lookups of clickserver.cache.cached: local (this process), hit (shared cache) or miss.",
    ["result"],
)
# Per live process (a `pid` label in multiprocess mode, dead processes dropped): the standard
# process_* metrics describe only the process that answers the scrape there.
PROCESS_CPU = Gauge(
    "clickserver_process_cpu_seconds",
    "User and system CPU time of the process.",
    multiprocess_mode="liveall",
)
PROCESS_MEMORY = Gauge(
    "clickserver_process_resident_memory_bytes",
    "Resident memory of the process.",
    multiprocess_mode="liveall",
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

CACHE_LOCAL = CACHE_LOOKUPS.labels(result="local")
CACHE_HIT = CACHE_LOOKUPS.labels(result="hit")
CACHE_MISS = CACHE_LOOKUPS.labels(result="miss")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A process samples its CPU and memory at most this often (on a request or a finished task).
PROCESS_SAMPLE_SECONDS = 5.0
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_sampled_at = 0.0

logger = logging.getLogger(__name__)


def status_class(status: int) -> str:
    return "5xx" if status >= 500 else "4xx" if status >= 400 else "2xx"


def process_sample(*, force: bool = False) -> None:
    """Set this process's CPU and memory gauges, at most every PROCESS_SAMPLE_SECONDS."""
    global _sampled_at
    now = time.monotonic()
    if not force and now - _sampled_at < PROCESS_SAMPLE_SECONDS:
        return
    _sampled_at = now
    PROCESS_CPU.set(time.process_time())
    try:
        with open("/proc/self/statm", "rb") as statm:
            PROCESS_MEMORY.set(int(statm.read().split()[1]) * _PAGE_SIZE)
    except OSError:  # not Linux: the peak resident size is the best the OS tells (KiB on Linux)
        PROCESS_MEMORY.set(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def route_name(request: object) -> str:
    """The resolved URL pattern's name (bounded, unlike paths), `unnamed` or `unmatched`."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    return match.view_name or match.route or "unnamed"


class MetricsMiddleware:
    """Counts and times every request by route name, method and status class (outermost in
    both handlers, so it times the whole stack and sees the route the URL resolved to)."""

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        method = request.method if request.method in METHODS else "other"
        route = route_name(request)
        HTTP_DURATION.labels(route=route, method=method).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(
            route=route, method=method, status_class=status_class(response.status_code)
        ).inc()
        process_sample()
        return response


def ip_allowed(address: str, networks: Iterable[str]) -> bool:
    """Whether `address` lies in one of `networks` (CIDRs or single addresses)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in networks)


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
