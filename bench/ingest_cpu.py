"""Python CPU per event of the ingestion service, in-process: validation and the one INSERT IGNORE.

    DATABASE_URL=mysql://root@127.0.0.1:3306/cs_cpu python bench/ingest_cpu.py --rounds 3

The wrk runs of ingest.py measure the whole server and move with the machine's noise; this one
times only `events_ingest` on 100-event batches of simulated storefront traffic (fresh event ids
each round), with `time.process_time`, so that a change to the ingestion code can be compared
with the code before it in one sitting (bench/README.md, "Reshaping"). Prints one JSON object.
"""

import argparse
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "0")

import django

django.setup()

from django.core.management import call_command  # noqa: E402

from events.services.ingest import events_ingest  # noqa: E402
from events.services.shops import shop_create  # noqa: E402
from events.simulator import Simulator  # noqa: E402

BATCH = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=30_000, help="at most (4,000 visits)")
    args = parser.parse_args()
    call_command("migrate", "--noinput", "-v0")
    shop = shop_create(domain=f"cpu-{uuid.uuid4().hex[:8]}.example", owner_username="bench").shop
    simulator = Simulator(shop_domain=shop.domain, seed=3)
    events: list[dict] = []
    for visits in simulator.history(visitors=4000, days=5, end=datetime(2026, 1, 1, tzinfo=UTC)):
        events.extend(visits)
    events = events[: args.events]
    received_at = datetime.now(UTC)
    rounds = []
    for _ in range(args.rounds):
        batches = [
            [dict(event, event_id=str(uuid.uuid4())) for event in events[i : i + BATCH]]
            for i in range(0, len(events), BATCH)
        ]
        cpu, wall = time.process_time(), time.perf_counter()
        for batch in batches:
            events_ingest(shop=shop, events=batch, received_at=received_at)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        rounds.append(
            {
                "cpu_us_per_event": round(cpu / len(events) * 1e6, 2),
                "events_per_s": round(len(events) / wall),
            }
        )
    best = min(r["cpu_us_per_event"] for r in rounds)
    print(json.dumps({"events": len(events), "rounds": rounds, "best_cpu_us_per_event": best}))


if __name__ == "__main__":
    main()
