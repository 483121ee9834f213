import json
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from events.models import Shop
from notifications import selectors


class Command(BaseCommand):
    help = (
        "How well the live scores given to a shop's sessions matched how those sessions ended: "
        "reliability table, Brier score and expected calibration error."
    )

    def add_arguments(self, parser):
        parser.add_argument("--shop", required=True, help="shop domain")
        parser.add_argument("--days", type=float, default=7.0, help="scores of the last D days")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")

    def handle(self, *args, **options):
        shop = Shop.objects.filter(domain=options["shop"]).first()
        if shop is None:
            raise CommandError(f"No shop with domain {options['shop']!r}.")
        if options["days"] <= 0:
            raise CommandError("--days must be positive.")
        now = timezone.now()
        report = selectors.live_calibration_get(
            shop=shop, now=now, since=now - timedelta(days=options["days"])
        )
        if report is None:
            raise CommandError(
                "No live score of a finished session yet: scores need a trained model, live "
                "traffic, and sessions that have been quiet for 30 minutes."
            )
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
            return
        self.stdout.write(
            f"{report.count} live scores of finished sessions: mean score "
            f"{report.mean_predicted:.3f}, bought {report.positive_rate:.3f}, "
            f"Brier {report.brier:.4f}, ECE {report.ece:.4f}"
        )
        self.stdout.write(f"{'score':>11}  {'scores':>7}  {'mean score':>10}  {'bought':>7}")
        for row in report.bins:
            self.stdout.write(
                f"{row.low:.1f}-{row.high:.1f}  {row.count:>9}  {row.mean_predicted:>10.3f}  "
                f"{row.observed_rate:>7.3f}"
            )
