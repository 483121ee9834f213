"""Print a shop's daily or weekly report (the text version), computed now from the rollups."""

import argparse
from datetime import date
from zoneinfo import ZoneInfo

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from analytics.models import Report
from analytics.report_render import report_text_render
from analytics.selectors.reports import report_data_compute, report_period_get
from clickserver.errors import ApplicationError
from events.models import Shop


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a day (expected YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = "Print the text report of a shop-local day (--day) or of the ISO week containing --week."

    def add_arguments(self, parser):
        parser.add_argument("--shop", required=True, help="shop domain")
        period = parser.add_mutually_exclusive_group(required=True)
        period.add_argument("--day", type=_day, help="YYYY-MM-DD: the daily report of that day")
        period.add_argument("--week", type=_day, help="YYYY-MM-DD: the ISO week containing it")

    def handle(self, *args, **options):
        shop = Shop.objects.filter(domain=options["shop"]).first()
        if shop is None:
            raise CommandError(f"no shop with domain {options['shop']!r}")
        kind = Report.Kind.WEEKLY if options["week"] else Report.Kind.DAILY
        today = timezone.now().astimezone(ZoneInfo(shop.timezone)).date()
        try:
            period = report_period_get(
                shop=shop, kind=kind, day=options["week"] or options["day"], today=today
            )
        except ApplicationError as error:
            raise CommandError(error.detail) from None
        data = report_data_compute(shop=shop, kind=kind, period=period)
        self.stdout.write(report_text_render(data, data["findings"]), ending="")
