"""Freshness: seconds from an event's 202 to its appearance in the analytics API.

    python bench/freshness.py --rate 2000 --seconds 60

Starts what production runs, each in its own process group: gunicorn with deploy's config, a Celery
worker and beat, on MariaDB, Redis and RabbitMQ (DATABASE_URL, REDIS_URL, CELERY_BROKER_URL; the
defaults are the local services). A background thread sends `--rate` events/s of browsing in
batches of 100 through `POST /events/`. Every `--probe-every` seconds a probe is sent: one purchase
by a new visitor whose URL carries `utm_source=freshness-probe`. Another thread polls, every
0.1 s, `/analytics/session_count/?utm_source=freshness-probe` and `/analytics/kpis/` (the
background traffic holds no purchase, so `orders` counts the probes) with the shop's API token,
as the dashboard does. A probe's freshness on an endpoint is the time from its 202 to the first
poll whose count includes it. Everything talks to 127.0.0.1 and stops by itself.

Prints one JSON object: p50/p95/max per endpoint, the load achieved and the settings that bound
the figure (PIPELINE_SETTLE_SECONDS plus the one-second scheduling debounce).
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import requests

ROOT = Path(__file__).resolve().parent.parent
PORT = int(os.environ.get("BENCH_FRESHNESS_PORT", "8078"))
PROBE_SOURCE = "freshness-probe"
BATCH = 100


def environment(var_dir: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": os.environ.get(
            "DATABASE_URL", "mysql://root@127.0.0.1:3306/clickserver_bench"
        ),
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/9"),
        "CELERY_BROKER_URL": os.environ.get(
            "CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//"
        ),
        # A queue of its own, so that only the worker started here takes these tasks.
        "CELERY_DEFAULT_QUEUE": "bench-freshness",
        "CACHE_KEY_PREFIX": "bench-freshness",
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "bench"),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DJANGO_SECURE_SSL_REDIRECT": "0",  # plain HTTP to gunicorn, no nginx in front
        "CLICKSERVER_VAR_DIR": var_dir,
        "INGEST_RATE_LIMIT_REQUESTS": "100000000",
        # The probes poll two analytics endpoints every 0.1 s, above the per-user read limit.
        "API_RATE_LIMIT_REQUESTS": "100000000",
        "GUNICORN_BIND": f"127.0.0.1:{PORT}",
        "GUNICORN_ACCESS_LOG": "",
    }


def spawn(command: list[str], env: dict[str, str], *, log: Path | None = None) -> subprocess.Popen:
    """Start a process in its own process group (so that its children stop with it); its output
    goes to `log` when given (appended), else nowhere."""
    output = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def wait_for_web(base: str) -> None:
    for _ in range(240):
        try:
            requests.get(f"{base}/health/", timeout=5)
            return
        except requests.RequestException:
            time.sleep(0.5)
    raise SystemExit("bench: gunicorn did not start")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Load(threading.Thread):
    """Browsing at `rate` events/s in batches of 100 from a pool of visitors, no purchases."""

    def __init__(self, *, base: str, write_key: str, rate: int, until: float) -> None:
        super().__init__(daemon=True)
        self.base, self.rate, self.until = base, rate, until
        self.http = requests.Session()
        self.http.headers.update({"X-Write-Key": write_key, "Content-Type": "application/json"})
        self.sent = 0
        self.failed = 0
        self.prefix = uuid.uuid4().hex[:8]

    def batch(self) -> bytes:
        events = []
        for _ in range(BATCH):
            self.sent += 1
            number = self.sent
            events.append(
                {
                    "event_id": f"{self.prefix}-{number}",
                    "type": "product_view" if number % 3 else "page_view",
                    "anonymous_id": f"visitor-{self.prefix}-{number % 5000}",
                    "url": f"https://bench.example/products/p{number % 40}",
                    "product": {"id": f"p{number % 40}", "price": "12.50"},
                }
            )
        return orjson.dumps({"batch": events})

    def run(self) -> None:
        started = time.monotonic()
        while (now := time.monotonic()) < self.until:
            due = (now - started) * self.rate
            if self.sent + BATCH > due:
                time.sleep(min(0.01, self.until - now))
                continue
            response = self.http.post(f"{self.base}/events/", data=self.batch(), timeout=30)
            if response.status_code != 202:
                self.failed += 1


class Poller(threading.Thread):
    """Records when each endpoint's count first reaches 1, 2, 3, … probes."""

    def __init__(self, *, base: str, shop: str, token: str, until: float) -> None:
        super().__init__(daemon=True)
        self.until = until
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"
        day = datetime.now(UTC).date().isoformat()
        query = f"shop={shop}&start={day}&end={day}"
        self.urls = {
            "session_count": f"{base}/analytics/session_count/?{query}&utm_source={PROBE_SOURCE}",
            "kpis": f"{base}/analytics/kpis/?{query}",
        }
        self.fields = {"session_count": "session_count", "kpis": "orders"}
        self.seen_at: dict[str, dict[int, float]] = {name: {} for name in self.urls}

    def run(self) -> None:
        while time.monotonic() < self.until:
            tick = time.monotonic()
            for name, url in self.urls.items():
                count = int(self.http.get(url, timeout=30).json()[self.fields[name]])
                seen = self.seen_at[name]
                for number in range(len(seen) + 1, count + 1):
                    seen[number] = time.monotonic()
            time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))


# Long on purpose: the run reads top to bottom as the procedure it measures (start the stack,
# send load and probes, poll, drain, report), each step with its own timing.
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="background events/s")
    parser.add_argument("--seconds", type=float, default=60, help="how long probes are sent")
    parser.add_argument("--probe-every", type=float, default=1.0)
    parser.add_argument("--drain", type=float, default=30, help="seconds to wait for the last")
    args = parser.parse_args()

    var_dir = tempfile.mkdtemp(prefix="bench-freshness-")
    env = environment(var_dir)
    python = sys.executable
    migrate = [python, "manage.py", "migrate", "--noinput", "-v0"]
    subprocess.run(migrate, cwd=ROOT, env=env, check=True)
    domain = f"fresh-{uuid.uuid4().hex[:8]}.example"
    shop_command = [python, "manage.py", "create_shop", "--domain", domain, "--owner", "bench"]
    shop_json = subprocess.run(
        shop_command, cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout
    created = orjson.loads(shop_json)
    base = f"http://127.0.0.1:{PORT}"
    celery = [python, "-m", "celery", "-A", "clickserver"]
    quiet = ["--loglevel", "WARNING"]
    worker_options = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    processes = [
        spawn([python, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "clickserver.wsgi"], env),
        spawn(
            [
                *celery,
                "worker",
                "--concurrency",
                "2",
                "--queues",
                "bench-freshness,bench-freshness.live",  # settings.CELERY_LIVE_QUEUE
                *quiet,
                *worker_options,
            ],
            env,
        ),
        spawn([*celery, "beat", *quiet], env),
    ]
    try:
        wait_for_web(base)
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        probes_until = started + args.seconds
        load = Load(base=base, write_key=created["write_key"], rate=args.rate, until=probes_until)
        poller = Poller(
            base=base, shop=domain, token=created["api_token"], until=probes_until + args.drain
        )
        load.start()
        poller.start()
        probe_http = requests.Session()
        probe_http.headers.update({"X-Write-Key": created["write_key"]})
        acknowledged: list[float] = []
        while time.monotonic() < probes_until:
            number = len(acknowledged) + 1
            visitor = f"probe-{domain}-{number}"
            event = {
                "event_id": visitor,
                "type": "purchase",
                "anonymous_id": visitor,
                "url": f"https://bench.example/checkout/done?utm_source={PROBE_SOURCE}",
                "order": {"id": f"probe-{number}", "revenue": "10.00", "currency": "USD"},
            }
            response = probe_http.post(f"{base}/events/", json=event, timeout=30)
            if response.status_code != 202:
                raise SystemExit(f"bench: probe {number} got {response.status_code}")
            acknowledged.append(time.monotonic())
            time.sleep(max(0.0, started + number * args.probe_every - time.monotonic()))
        load.join()
        achieved = load.sent / (time.monotonic() - started)
        poller.join()
    finally:
        for process in processes:
            stop(process)
    output: dict = {
        "rate_target": args.rate,
        "rate_achieved": round(achieved),
        "failed_requests": load.failed,
        "probes": len(acknowledged),
        "settle_s": float(env.get("PIPELINE_SETTLE_SECONDS", 2.0)),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }
    for name, seen in poller.seen_at.items():
        delays = [seen[n] - at for n, at in enumerate(acknowledged, 1) if n in seen]
        output[name] = {
            "seen": len(delays),
            "p50_s": round(statistics.median(delays), 2) if delays else None,
            "p95_s": round(percentile(delays, 0.95), 2) if delays else None,
            "max_s": round(max(delays), 2) if delays else None,
        }
    print(orjson.dumps(output).decode())


if __name__ == "__main__":
    main()
