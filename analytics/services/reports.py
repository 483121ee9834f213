"""Reports: build a period's report, store it, and email it to the shop's recipients."""

import logging
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.core.validators import validate_email

from analytics.models import Report, ReportRecipient
from analytics.periods import Period
from analytics.report_render import (
    KIND_TITLES,
    period_label,
    report_html_render,
    report_text_render,
)
from analytics.selectors.reports import report_data_compute, report_recipients_get
from clickserver.errors import ApplicationError
from events.models import Shop

logger = logging.getLogger(__name__)


def report_generate(*, shop: Shop, kind: str, period: Period, now: datetime) -> Report:
    """Build and store the report of `period` (a regeneration replaces the figures, text and
    HTML, and keeps whether it was sent)."""
    data = report_data_compute(shop=shop, kind=kind, period=period)
    report, _ = Report.objects.update_or_create(
        shop=shop,
        kind=kind,
        first_day=period.first,
        defaults={
            "last_day": period.last,
            "data": data,
            "text": report_text_render(data, data["findings"]),
            "html": report_html_render(data, data["findings"], data["charts"]),
            "created_at": now,
        },
    )
    return report


def report_send(*, report: Report, now: datetime) -> int:
    """Email the report (plain text and HTML) to its recipients once; returns how many.

    The report is claimed (`sent_at`) before sending, so concurrent workers send it once; a
    failed send releases the claim and re-raises, for the task to retry.
    """
    recipients = report_recipients_get(shop=report.shop, kind=report.kind)
    claimed = Report.objects.filter(pk=report.pk, sent_at__isnull=True).update(
        sent_at=now, recipient_count=len(recipients)
    )
    if not claimed or not recipients:
        return 0
    subject = (
        f"{report.shop.name or report.shop.domain}: {KIND_TITLES[report.kind]} "
        f"({period_label(report.data)})"
    )
    message = EmailMultiAlternatives(subject=subject, body=report.text, to=recipients)
    message.attach_alternative(report.html, "text/html")
    try:
        message.send()
    except OSError:
        Report.objects.filter(pk=report.pk).update(sent_at=None, recipient_count=0)
        raise
    logger.info("report %s sent to %d recipients", report, len(recipients))
    return len(recipients)


def report_deliver(*, shop_id: int, kind: str, first: date, now: datetime) -> int:
    """Generate the report starting on `first` unless stored, then send it unless sent."""
    shop = Shop.objects.get(pk=shop_id)
    report = Report.objects.filter(shop=shop, kind=kind, first_day=first).first()
    if report is None:
        last = first if kind == Report.Kind.DAILY else first + timedelta(days=6)
        period = Period(first=first, last=last, tz=ZoneInfo(shop.timezone))
        report = report_generate(shop=shop, kind=kind, period=period, now=now)
    return report_send(report=report, now=now)


def report_recipient_save(
    *, shop: Shop, email: str, is_daily: bool, is_weekly: bool
) -> ReportRecipient:
    """Add an address to the shop's report recipients, or change which reports it gets."""
    email = email.strip()
    try:
        validate_email(email)
    except ValidationError:
        message = "enter a valid email address"
        raise ApplicationError(f"email: {message}", fields={"email": [message]}) from None
    recipient, _ = ReportRecipient.objects.update_or_create(
        shop=shop, email=email, defaults={"is_daily": is_daily, "is_weekly": is_weekly}
    )
    return recipient


def report_recipient_delete(*, recipient: ReportRecipient) -> None:
    recipient.delete()
