"""Batched ingestion through gunicorn into MariaDB, end to end.

Starts gunicorn on the production-like settings (MariaDB, Redis, RabbitMQ), posts batches of 100
events from client threads on loopback for a bounded number of requests, then counts what is
durable in MariaDB. Prints JSON. Usage: python bench/ingest.py [--requests 400] [--clients 8]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
ENV = {
    **os.environ,
    "DATABASE_URL": os.environ.get(
        "BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/clickserver_bench"
    ),
    "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"),
    "CELERY_BROKER_URL": os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"),
    "CELERY_DEFAULT_QUEUE": "clickserver-bench",
    "DJANGO_SECRET_KEY": "bench",
    "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
    "INGEST_RATE_LIMIT_REQUESTS": "1000000",
}
PORT = 8077


def manage(*args: str) -> str:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=ENV,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def mysql(sql: str) -> str:
    done = subprocess.run(
        ["mysql", "-uroot", "-h127.0.0.1", "-N", "-e", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def batch(n: int) -> dict:
    return {
        "batch": [
            {
                "event_id": str(uuid.uuid4()),
                "type": "product_view",
                "anonymous_id": f"anon-{i % 50}",
                "url": "https://bench.example/products/p1?utm_source=bench",
                "product": {"id": f"p{i % 40}", "price": "12.50", "category": "Mugs"},
                "context": {"user_agent": "bench/1.0"},
            }
            for i in range(n)
        ]
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()

    mysql("DROP DATABASE IF EXISTS clickserver_bench")
    mysql("CREATE DATABASE clickserver_bench CHARACTER SET utf8mb4")
    manage("migrate", "--noinput", "-v0")
    write_key = json.loads(manage("create_shop", "--domain", "bench.example", "--owner", "bench"))[
        "write_key"
    ]
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "clickserver.wsgi"],
        cwd=ROOT,
        env={**ENV, "GUNICORN_BIND": f"127.0.0.1:{PORT}", "GUNICORN_WORKERS": str(args.workers),
             "GUNICORN_ACCESS_LOG": os.devnull},
    )  # fmt: skip
    url = f"http://127.0.0.1:{PORT}/events/"
    try:
        for _ in range(120):
            try:
                requests.get(f"http://127.0.0.1:{PORT}/health/", timeout=5)
                break
            except requests.RequestException:
                time.sleep(0.5)
        bodies = [json.dumps(batch(args.batch)).encode() for _ in range(args.requests)]
        sessions = [requests.Session() for _ in range(args.clients)]
        latencies: list[float] = []

        def send(i: int) -> int:
            started = time.perf_counter()
            response = sessions[i % args.clients].post(
                url,
                data=bodies[i],
                headers={"X-Write-Key": write_key, "Content-Type": "application/json"},
                timeout=30,
            )
            latencies.append(time.perf_counter() - started)
            return response.json()["accepted"] if response.status_code == 202 else 0

        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            accepted = sum(pool.map(send, range(args.requests)))
        elapsed = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    durable = int(mysql("SELECT COUNT(*) FROM clickserver_bench.events_event"))
    latencies.sort()
    print(
        json.dumps(
            {
                "benchmark": "ingest_batched",
                "events_per_request": args.batch,
                "requests": args.requests,
                "clients": args.clients,
                "gunicorn_workers": args.workers,
                "accepted": accepted,
                "durable_in_mariadb": durable,
                "seconds": round(elapsed, 2),
                "events_per_s": round(durable / elapsed),
                "request_p50_ms": round(statistics.median(latencies) * 1000, 1),
                "request_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
