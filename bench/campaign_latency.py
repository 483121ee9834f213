"""Campaign latency: seconds from the event that moves a session's score into a campaign's band
to the decision being available at `GET /notifications/pending/` for that browser.

    python bench/campaign_latency.py --rate 2000 --seconds 60

Starts what production runs, as bench/freshness.py does (gunicorn with deploy's config, a Celery
worker and beat on MariaDB, Redis and RabbitMQ, each in its own process group), on a new shop
whose active model is the fixed model (`notifications/fixed_model.py`: a session of n events
scores n / (n + 6), through the real in-process scoring) and which runs one on-site score-band
campaign, band [0.2, 0.3]: the second event of a session moves it in. Freshness's background
thread sends `--rate` browsing events/s in batches of 100 (5,000 visitors, whose sessions pass
through the band and are decided too, then grow out of it). After `--warmup` seconds, every
`--probe-every` seconds a probe browser (a new anonymous id) sends one page view, then 0.5 s
later a product view: the event that moves it into the band. A poller asks `pending` for each
open probe every 0.1 s with the write key, as the snippet does; a probe's latency is from the
202 of its second event to the first answer that carries its decision (`exposure` set: a holdout
decision shows nothing, but is as available). Everything talks to 127.0.0.1 and stops by itself.

Prints one JSON object: p50/p95/p99/max, probes seen, the load achieved and the load average.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.freshness import (
    ROOT,
    Load,
    environment,
    percentile,
    spawn,
    stop,
    wait_for_web,
)

PORT = int(os.environ.get("BENCH_CAMPAIGN_PORT", "8079"))
QUEUE = "bench-campaign"
BAND = (0.2, 0.3)
SETUP = """
from pathlib import Path
from datetime import timedelta
from django.utils import timezone
from events.models import Shop
from notifications.campaigns import services
from notifications.campaigns.rules import ContentIn
from notifications.fixed_model import fixed_model_activate
shop = Shop.objects.get(domain={domain!r})
now = timezone.now()
fixed_model_activate(shop=shop, directory=Path({models!r}), now=now)
campaign = services.campaign_create(
    shop=shop, key="latency", name="Latency", now=now,
    trigger={{"kind": "score_band", "low": {low}, "high": {high}}},
    variants=[ContentIn(key="nudge", title="Still deciding?", body="It is in your cart.",
                        cta_url="/cart", cta_text="Back to cart")],
)
services.campaign_start(campaign=campaign, now=now)
"""


class Poller(threading.Thread):
    """Asks `pending` for every open probe every 0.1 s; records when its decision shows."""

    def __init__(self, *, base: str, write_key: str, until: float) -> None:
        super().__init__(daemon=True)
        self.url = f"{base}/notifications/pending/"
        self.until = until
        self.http = requests.Session()
        self.http.headers["X-Write-Key"] = write_key
        self.open: dict[str, float] = {}  # anonymous id → when its band event was acknowledged
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.errors = 0

    def watch(self, anonymous_id: str, acknowledged_at: float) -> None:
        with self.lock:
            self.open[anonymous_id] = acknowledged_at

    def run(self) -> None:
        while time.monotonic() < self.until:
            tick = time.monotonic()
            with self.lock:
                probes = list(self.open.items())
            for anonymous_id, at in probes:
                response = self.http.get(
                    self.url, params={"anonymous_id": anonymous_id, "consent": 1}, timeout=30
                )
                if response.status_code != 200:
                    self.errors += 1
                    continue
                if response.json()["exposure"] is not None:
                    with self.lock:
                        self.latencies.append(time.monotonic() - at)
                        del self.open[anonymous_id]
            time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=2000, help="background events/s")
    parser.add_argument("--seconds", type=float, default=60, help="how long probes are sent")
    parser.add_argument(
        "--warmup",
        type=float,
        default=45,
        help="load before the first probe (each worker process loads TensorFlow first)",
    )
    parser.add_argument("--probe-every", type=float, default=1.0)
    parser.add_argument("--drain", type=float, default=60, help="seconds to wait for the last")
    parser.add_argument(
        "--log-dir",
        type=Path,
        help="write each process's log here at INFO (the worker logs every task and its time)",
    )
    args = parser.parse_args()

    var_dir = tempfile.mkdtemp(prefix="bench-campaign-")
    env = environment(var_dir) | {
        "CELERY_DEFAULT_QUEUE": QUEUE,
        "CACHE_KEY_PREFIX": QUEUE,
        "GUNICORN_BIND": f"127.0.0.1:{PORT}",
        "STOREFRONT_RATE_LIMIT_REQUESTS": "100000000",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    python = sys.executable
    subprocess.run(
        [python, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    domain = f"campaign-{uuid.uuid4().hex[:8]}.example"
    created = orjson.loads(
        subprocess.run(
            [python, "manage.py", "create_shop", "--domain", domain, "--owner", "bench"],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        ).stdout
    )  # fmt: skip
    setup = SETUP.format(domain=domain, models=var_dir, low=BAND[0], high=BAND[1])
    done = subprocess.run(
        [python, "manage.py", "shell", "-v0", "-c", setup],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"bench: setup failed: {done.stderr[-2000:]}")
    base = f"http://127.0.0.1:{PORT}"
    celery = [python, "-m", "celery", "-A", "clickserver"]
    quiet = ["--loglevel", "INFO" if args.log_dir else "WARNING"]

    def log(name: str) -> Path | None:
        if args.log_dir is None:
            return None
        args.log_dir.mkdir(parents=True, exist_ok=True)
        return args.log_dir / f"{name}.log"

    worker_options = ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    processes = [
        spawn(
            [python, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "clickserver.wsgi"],
            env,
            log=log("web"),
        ),
        # As deploy/ runs them: a worker for the default queue, and one for the live queue
        # (settings.CELERY_LIVE_QUEUE: the pipeline, the live scores, the decisions).
        # --purge: a run cut short must not leave its tasks to the next run's worker.
        spawn(
            [
                *celery,
                "worker",
                "--concurrency",
                "2",
                "--queues",
                QUEUE,
                "--hostname",
                f"default@{QUEUE}",
                "--purge",
                *quiet,
                *worker_options,
            ],
            env,
            log=log("worker"),
        ),
        spawn(
            [
                *celery,
                "worker",
                "--concurrency",
                "2",
                "--queues",
                f"{QUEUE}.live",
                "--hostname",
                f"live@{QUEUE}",
                "--purge",
                *quiet,
                *worker_options,
            ],
            env,
            log=log("worker-live"),
        ),
        spawn([*celery, "beat", *quiet], env, log=log("beat")),
    ]
    try:
        wait_for_web(base)
        load_before = os.getloadavg()[0]
        started = time.monotonic()
        probes_from = started + args.warmup
        probes_until = probes_from + args.seconds
        load = Load(base=base, write_key=created["write_key"], rate=args.rate, until=probes_until)
        poller = Poller(base=base, write_key=created["write_key"], until=probes_until + args.drain)
        load.start()
        poller.start()
        time.sleep(args.warmup)
        http = requests.Session()
        http.headers["X-Write-Key"] = created["write_key"]
        probes = 0
        while time.monotonic() < probes_until:
            probes += 1
            visitor = f"probe-{domain}-{probes}"
            for step, (kind, path) in enumerate((("page_view", "/"), ("product_view", "/p/1"))):
                if step:
                    time.sleep(0.5)
                event = {
                    "event_id": f"{visitor}-{step}",
                    "type": kind,
                    "anonymous_id": visitor,
                    "url": f"https://bench.example{path}",
                }
                response = http.post(f"{base}/events/", json=event, timeout=30)
                if response.status_code != 202:
                    raise SystemExit(f"bench: probe {probes} got {response.status_code}")
            poller.watch(visitor, time.monotonic())
            time.sleep(max(0.0, probes_from + probes * args.probe_every - time.monotonic()))
        load.join()
        achieved = load.sent / (time.monotonic() - started)
        poller.join()
    finally:
        for process in processes:
            stop(process)
    delays = poller.latencies
    print(
        orjson.dumps(
            {
                "rate_target": args.rate,
                "rate_achieved": round(achieved),
                "failed_requests": load.failed,
                "probes": probes,
                # A probe not seen by the end of the drain waited longer than its drain time.
                "seen": len(delays),
                "p50_s": round(statistics.median(delays), 2) if delays else None,
                "p95_s": round(percentile(delays, 0.95), 2) if delays else None,
                "p99_s": round(percentile(delays, 0.99), 2) if delays else None,
                "max_s": round(max(delays), 2) if delays else None,
                "pending_errors": poller.errors,
                "settle_s": float(env.get("PIPELINE_SETTLE_SECONDS", 2.0)),
                "load_average_before": round(load_before, 2),
                "load_average_after": round(os.getloadavg()[0], 2),
            }
        ).decode()
    )


if __name__ == "__main__":
    main()
