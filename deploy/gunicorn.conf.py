"""gunicorn settings for clickserver (env-overridable)."""

import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Ingestion is I/O bound on the database: a few threads per process hide its latency.
workers = int(os.environ.get("GUNICORN_WORKERS", multiprocessing.cpu_count() * 2 + 1))
threads = int(os.environ.get("GUNICORN_THREADS", "2"))
worker_class = "gthread"
# "auto" parses HTTP in C with gunicorn_h1c (requirements.txt: gunicorn-h1c) and falls back to
# the pure-Python parser without it; "python" forces that one, e.g. to compare the two.
http_parser = os.environ.get("GUNICORN_HTTP_PARSER", "auto")
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
max_requests = 10000
max_requests_jitter = 1000
# An empty value turns the access log off (nginx logs every request already): even into /dev/null,
# formatting the line costs a tenth of a single-event ingestion request.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-") or None
errorlog = "-"
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")


def child_exit(server, worker):
    """With PROMETHEUS_MULTIPROC_DIR set, /metrics sums every worker's counters from that
    directory; a dead worker's counters stay counted, only its live gauges must go."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
