"""`make demo`: a demo shop with history, then web + worker + beat on the embedded defaults.

Runs gunicorn, a Celery worker and Celery beat as child processes (SQLite, local cache, kombu's
filesystem broker, in-process models), seeds history through the real ingestion API, runs
shoppers through one finished and one running experiment, trains the conversion model, starts a
sale-notification campaign with simulated shoppers, keeps a trickle of live traffic (through the
running experiment), and prints the URLs and the login. Ctrl-C stops everything.
"""

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = os.environ.get("DEMO_PORT", "8000")
BASE = f"http://127.0.0.1:{PORT}"
DOMAIN = "demo-shop.example.com"
OWNER_EMAIL = os.environ.get("DEMO_OWNER_EMAIL", "owner@demo-shop.example.com")
BIN = Path(sys.executable).parent
# The demo's running experiment (demo_experiments) and the true effect its live visits carry.
RUNNING_EXPERIMENT = "one-click-checkout"
RUNNING_EFFECT = "one-click=0.1"
RUNNING_EXPERIMENTS = (
    "from notifications.models import Experiment; "
    f"print(list(Experiment.objects.filter(shop__domain={DOMAIN!r}, status='running')"
    ".values_list('key', flat=True)))"
)


def manage(*args: str, check: bool = True) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True
    )
    if check and done.returncode != 0:
        sys.exit(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout.strip()


def first_event_command() -> str:
    write_key = manage(
        "shell", "-v0", "-c",
        f"from events.models import Shop; print(Shop.objects.get(domain={DOMAIN!r}).write_key)",
    )  # fmt: skip
    event = (
        '{"type":"page_view","anonymous_id":"my-first-visitor",'
        '"url":"https://demo-shop.example.com/hello?utm_source=terminal","title":"Hello"}'
    )
    return (
        f"curl -sS -X POST {BASE}/events/ -H 'X-Write-Key: {write_key}' "
        f"-H 'Content-Type: application/json' -d '{event}'"
    )


def wait_for_web(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{BASE}/health/", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    sys.exit("the web server did not start")


def seed_experiments() -> None:
    """One finished and one running experiment with their simulated shoppers
    (notifications/management/commands/demo_experiments.py); the demo goes on without them."""
    print("running shoppers through two experiments…", flush=True)
    done = subprocess.run(
        [sys.executable, "manage.py", "demo_experiments", "--shop", DOMAIN, "--url", BASE],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["unknown error"]
        print(f"demo experiments not seeded ({reason[0]})", flush=True)


def seed_campaign() -> None:
    """One running score-band campaign with simulated shoppers (decisions, notifications,
    purchases: notifications/management/commands/demo_campaign.py). It needs the conversion
    model for its live scores, so it comes after the training; the demo goes on without it."""
    print("running shoppers through a sale-notification campaign…", flush=True)
    done = subprocess.run(
        [sys.executable, "manage.py", "demo_campaign", "--shop", DOMAIN],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["unknown error"]
        print(f"demo campaign not seeded ({reason[0]})", flush=True)


# What beat would do at night and after the shop's day ends, done once now so that the Customers
# and Reports pages have something to show: the customer predictions (or the reason there are
# none yet) and yesterday's daily and last week's weekly report.
CUSTOMERS_AND_REPORTS = (
    "from django.utils import timezone; from events.models import Shop; "
    "from segments.services.customers import customer_predictions_refresh; "
    "from analytics.selectors.reports import reports_due_get; "
    "from analytics.services.reports import report_deliver; "
    f"shop = Shop.objects.get(domain={DOMAIN!r}); now = timezone.now(); "
    "customer_predictions_refresh(shop_id=shop.pk, now=now); "
    "[report_deliver(shop_id=i, kind=k, first=f, now=now) "
    "for i, k, f in reports_due_get(shops=[shop], now=now)]"
)


def prepare_dashboard() -> None:
    """Sessions, rollups and a conversion model straight away, without waiting for beat."""
    print("processing events and building rollups…", flush=True)
    manage("process_events", "--shop", DOMAIN)
    manage("rebuild_rollups", "--shop", DOMAIN)
    print("training the conversion model…", flush=True)
    done = subprocess.run(
        [sys.executable, "manage.py", "train_conversion_model", "--shop", DOMAIN],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["unknown error"]
        print(
            f"conversion model not trained ({reason[0]}); live sessions show no score until "
            f"`manage.py train_conversion_model --shop {DOMAIN}` succeeds with more history.",
            flush=True,
        )
    print("customer predictions and the latest reports…", flush=True)
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v0", "-c", CUSTOMERS_AND_REPORTS],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["unknown error"]
        print(f"customers and reports left to beat ({reason[0]})", flush=True)


def main() -> None:
    os.environ.setdefault("DJANGO_DEBUG", "1")
    os.environ.setdefault("DJANGO_SECURE_COOKIES", "0")
    os.environ.setdefault("PIPELINE_SETTLE_SECONDS", "1")
    # Links in the alert and report emails lead to this demo, on whatever port it serves.
    os.environ.setdefault("PUBLIC_BASE_URL", BASE)
    # TensorFlow's C++ start-up chatter (no CUDA, oneDNN notes) would bury the lines printed last.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # `kill` (SIGTERM) stops the children too, as Ctrl-C does: the finally below runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    password = os.environ.get("DEMO_PASSWORD") or secrets.token_urlsafe(9)
    manage(
        "shell", "-v0", "-c",
        "from django.contrib.auth import get_user_model; U = get_user_model(); "
        "u, _ = U.objects.get_or_create(username='admin', defaults={'is_staff': True, "
        "'is_superuser': True}); u.is_staff = u.is_superuser = True; "
        f"u.email = {OWNER_EMAIL!r}; u.set_password({password!r}); u.save()",
    )  # fmt: skip
    fresh = "does not exist" in manage(
        "shell", "-v0", "-c",
        f"from events.models import Shop; print('exists' if Shop.objects.filter(domain={DOMAIN!r})"
        ".exists() else 'does not exist')",
    )  # fmt: skip
    if fresh:
        # New York: its evening shoppers arrive at night in UTC, so the charts show that buckets
        # follow the shop's timezone.
        manage("create_shop", "--domain", DOMAIN, "--owner", "admin", "--name", "Demo Tea Shop",
               "--timezone", "America/New_York")  # fmt: skip
    # "Generate anomalies" ends in an alert: warnings and worse are emailed to the owner, and
    # without EMAIL_URL the console backend prints the email in this terminal (the worker's).
    manage(
        "shell", "-v0", "-c",
        "from events.models import Shop; from analytics.services.alerts import "
        f"alert_rule_demo_ensure; alert_rule_demo_ensure(shop=Shop.objects.get(domain={DOMAIN!r}), "
        f"email={OWNER_EMAIL!r})",
    )  # fmt: skip

    env = {**os.environ, "GUNICORN_BIND": f"127.0.0.1:{PORT}", "GUNICORN_WORKERS": "2",
           "GUNICORN_ACCESS_LOG": os.devnull}  # fmt: skip
    commands = [
        [str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "clickserver.wsgi"],
        [str(BIN / "celery"), "-A", "clickserver", "worker", "-l", "warning", "-c", "1"],
        [str(BIN / "celery"), "-A", "clickserver", "beat", "-l", "warning"],
    ]
    children = [subprocess.Popen(command, cwd=ROOT, env=env) for command in commands]
    try:
        wait_for_web()
        if fresh:
            print("seeding 60 days of history through the ingestion API…", flush=True)
            subprocess.run(
                [sys.executable, "manage.py", "simulate_traffic", "--shop", DOMAIN, "--visitors",
                 "6000", "--days", "60", "--anomalies", "--url", BASE],
                cwd=ROOT, check=True,
            )  # fmt: skip
            seed_experiments()
            prepare_dashboard()
            seed_campaign()
        print(
            f"\nclickserver demo is running\n"
            f"  dashboard: {BASE}/   (login: admin / {password})\n"
            f"  admin:     {BASE}/admin/\n"
            f"  API docs:  {BASE}/api/docs/\n"
            f"  health:    {BASE}/health/ready/\n"
            f"  alerts:    emailed to {OWNER_EMAIL} (printed here: the console email backend);\n"
            f"             the dashboard's Generate anomalies button sends one within a minute\n"
            f"Ctrl-C stops web, worker and beat.\n",
            flush=True,
        )
        # The last line: paste it into another terminal, and the event shows on the dashboard's
        # Live page a few seconds later (the settle window, then the worker and its follow-ups).
        print(f"Send your first event:\n{first_event_command()}\n", flush=True)
        # Live visits go through the running experiment, so its results keep moving.
        live = ["simulate_traffic"]
        if RUNNING_EXPERIMENT in manage("shell", "-v0", "-c", RUNNING_EXPERIMENTS, check=False):
            live = ["simulate_experiment", "--experiment", RUNNING_EXPERIMENT, "--effect",
                    RUNNING_EFFECT]  # fmt: skip
        children.append(
            subprocess.Popen(
                [sys.executable, "manage.py", *live, "--shop", DOMAIN, "--visitors", "0",
                 "--rate", "match", "--seed", "37", "--url", BASE],
                cwd=ROOT, stdout=subprocess.DEVNULL,
            )
        )  # fmt: skip
        while all(child.poll() is None for child in children):
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(timeout=30)


if __name__ == "__main__":
    main()
