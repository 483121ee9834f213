"""`campaign_results` (the results endpoint's read) and `campaigns_headlines` (the Campaigns page's
list) for one campaign with N decisions and the toast's events: seconds, median of 3.

    DATABASE_URL=mysql://root@127.0.0.1:3306/clickserver python bench/campaign_results.py \
        --decisions 20000

Needs a migrated database. Creates (or resets) one shop with N decisions of one running campaign
(10 % holdout), a `notification_shown` event for 80 % of the content decisions, a click for 10 %
and a dismissal for 20 %, and as many `page_view` events as decisions. No experiment result is
stored: this times the campaign's own reads (the experiment's analysis is
bench/experiment_results.py). Prints one JSON object.
"""

import argparse
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import django

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clickserver.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench")
django.setup()

import orjson  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from events.models import Event, Person, Session, Shop  # noqa: E402
from notifications.campaigns import results, services  # noqa: E402
from notifications.campaigns.rules import ContentIn  # noqa: E402
from notifications.models import Campaign, CampaignDecision  # noqa: E402

DOMAIN = "bench-campaign-results.example.com"
CONTENT = ContentIn(key="nudge", title="Hi", body="Your cart", cta_url="/cart")


def shop_reset(*, count: int) -> tuple[Shop, Campaign]:
    for model in (CampaignDecision, Event, Session, Person):
        model.objects.filter(shop__domain=DOMAIN).delete()
    Shop.objects.filter(domain=DOMAIN).delete()
    shop = Shop.objects.create(domain=DOMAIN, name="Bench campaign results")
    now = timezone.now()
    campaign = services.campaign_create(
        shop=shop,
        key="nudge",
        name="Nudge",
        trigger={"kind": "score_band", "low": 0.2, "high": 0.6},
        variants=[CONTENT],
        now=now - timedelta(days=7),
    )
    campaign = services.campaign_start(campaign=campaign, now=now - timedelta(days=7))
    people = Person.objects.bulk_create(
        (Person(shop=shop, first_seen_at=now, last_seen_at=now) for _ in range(count)),
        batch_size=5000,
    )
    sessions = Session.objects.bulk_create(
        (Session(shop=shop, person=p, started_at=now, ended_at=now) for p in people),
        batch_size=5000,
    )
    decided = CampaignDecision.objects.bulk_create(
        (
            CampaignDecision(
                campaign=campaign,
                shop=shop,
                session=s,
                person_id=s.person_id,
                anonymous_id=f"visitor-{n}",
                unit_id=f"anon:visitor-{n}",
                phase=1,
                arm="holdout" if n % 10 == 0 else "nudge",
                is_holdout=n % 10 == 0,
                reason="score 0.400 in [0.200, 0.600]",
                score=0.4,
                created_at=now - timedelta(days=3),
            )
            for n, s in enumerate(sessions)
        ),
        batch_size=5000,
    )
    rows = []
    for n, decision in enumerate(decided):
        at = now - timedelta(days=3, minutes=-(n % 600))
        rows.append(
            Event(
                shop=shop,
                event_id=f"v-{n}",
                type="page_view",
                anonymous_id=f"visitor-{n}",
                occurred_at=at,
                received_at=now,
            )
        )
        if decision.is_holdout:
            continue
        kinds = []
        if n % 10 < 8:
            kinds.append("notification_shown")
        if n % 10 == 1:
            kinds.append("notification_clicked")
        if n % 10 in (2, 3):
            kinds.append("notification_dismissed")
        for kind in kinds:
            properties = {"campaign": "nudge", "decision": decision.pk, "variant": "nudge"}
            rows.append(
                Event(
                    shop=shop,
                    event_id=f"{kind}-{n}",
                    type=kind,
                    anonymous_id=f"visitor-{n}",
                    occurred_at=at,
                    received_at=now,
                    properties=properties,
                )
            )
    Event.objects.bulk_create(rows, batch_size=5000)
    return shop, Campaign.objects.select_related("experiment", "shop").get(pk=campaign.pk)


def timed(function) -> tuple[float, int, object]:
    runs = []
    for _ in range(3):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            answer = function()
            runs.append(time.perf_counter() - started)
    return statistics.median(runs), len(queries), answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20000)
    args = parser.parse_args()

    shop, campaign = shop_reset(count=args.decisions)
    seconds, queries, answer = timed(lambda: results.campaign_results(campaign=campaign))
    list_seconds, list_queries, _ = timed(
        lambda: results.campaigns_headlines(shop=shop, campaigns=[campaign])
    )
    nudge = next(arm for arm in answer["arms"] if arm["arm"] == "nudge")
    report = {
        "decisions": args.decisions,
        "events": Event.objects.filter(shop=shop).count(),
        "campaign_results": {"seconds": round(seconds, 3), "queries": queries},
        "campaigns_headlines": {"seconds": round(list_seconds, 3), "queries": list_queries},
        "nudge": [nudge["decisions"], nudge["shown"], nudge["clicked"], nudge["dismissed"]],
        "load_average": os.getloadavg()[0],
    }
    for model in (CampaignDecision, Event, Session, Person):
        model.objects.filter(shop=shop).delete()
    shop.delete()
    print(orjson.dumps(report).decode())


if __name__ == "__main__":
    main()
